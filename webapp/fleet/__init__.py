"""Several machines from one dashboard: agents over NATS.

`Machine` is what the web layer asks of a machine; `LocalMachine` is the in-process
supervisor, `RemoteMachine` an `udplab agent` reached over NATS, and `Fleet` holds them.
The engine imports nothing from here.
"""
