"""UDP Lab: a web dashboard for running the UDP experiments of chapter 2 of
*Foundations of Python Network Programming* on real sockets."""

__version__ = "0.1.0"
