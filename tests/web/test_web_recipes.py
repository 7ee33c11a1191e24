"""Issue 6, the web side: recipes (the chapter as one-click experiments) played through the
API and the page's form routes, recipes as data files a teacher can copy and edit, and the
read-only viewer link.

Every recipe runs for real: on loopback, and the lab recipe in network namespaces the app
builds (root here and in CI: it runs, it never skips). The lab is torn down afterwards.
"""

import copy
import json
import re
import secrets
import time
from pathlib import Path

import pytest

from webapp.engine import lab as lab_module
from webapp.engine.errors import BadSpec
from webapp.engine.recipes import RECIPES_DIR, Recipes
from webapp.engine.supervisor import Supervisor

RECIPE_FILES = sorted(RECIPES_DIR.glob("*.json"))
NAMES = [path.stem for path in RECIPE_FILES]
# a fleet recipe needs agents on other machines: tests/fleet/test_fleet_recipe.py plays it
ONE_MACHINE = [p.stem for p in RECIPE_FILES if not json.loads(p.read_text()).get("fleet")]
ALIVE = {"starting", "running", "paused"}
VIEW_LINE = re.compile(r"http://127\.0\.0\.1:\d+/\?view=(\S+)")
READ_ONLY = "read-only"


def recipe_file(name: str) -> dict:
    return json.loads((RECIPES_DIR / f"{name}.json").read_text())


def viewer_token(live) -> str:
    """The viewer token, from the `?view=…` line udplab printed when it started."""
    match = VIEW_LINE.search(live.output())
    assert match, f"udplab printed no ?view= link:\n{live.output()[:2000]}"
    assert match.group(1) != live.token, "the viewer link must have a token of its own"
    return match.group(1)


def viewer_cookie(live) -> dict[str, str]:
    return {"Cookie": f"udplab_view_{live.port}={viewer_token(live)}"}


def assert_matches_the_book(run: dict, name: str) -> None:
    """A finished run: every step ok, with the book's words and what happened here."""
    steps = recipe_file(name)["steps"]
    assert run["done"] is True, run
    assert run["ok"] is True, json.dumps(run, indent=1)
    assert run["index"] == run["total"] == len(steps)
    assert len(run["steps"]) == len(steps)
    for number, (step, result) in enumerate(zip(steps, run["steps"], strict=True), 1):
        assert result["ok"] is True, f"step {number} of {name}: {result}"
        assert result["expect"] == step.get("expect"), f"step {number} of {name}"
        assert result["say"] == step.get("say", "")
        if result["expect"] is not None:
            assert isinstance(result["expect"], str) and result["expect"].strip()
        # something happened and is shown beside the book's words (a bare wait says nothing)
        if step.get("do", "wait") != "wait" or "worker" in step or "look" in step:
            assert isinstance(result["actual"], str) and result["actual"].strip(), result


def assert_workers_stopped(api, run: dict) -> None:
    """The run's workers are no longer alive (stopped, finished or failed)."""
    workers = {w["id"]: w for w in api.get("/api/workers").json()["workers"]}
    for short, worker_id in run["workers"].items():
        if worker_id in workers:  # a failed start leaves no worker; a removed one is gone
            assert workers[worker_id]["state"] not in ALIVE, (short, workers[worker_id])


def tear_down_lab(api) -> None:
    response = api.delete("/api/lab")
    assert response.status_code == 200, response.text
    assert api.get("/api/lab").json()["built"] is False


# --- the catalogue ---------------------------------------------------------------------------

def test_recipe_files_cover_the_chapter():
    assert len(NAMES) >= 12
    for path in RECIPE_FILES:
        recipe = json.loads(path.read_text())
        assert recipe["title"] and recipe["section"] and recipe["steps"], path.name


def test_catalogue_lists_every_recipe_file(api):
    response = api.get("/api/recipes")
    assert response.status_code == 200
    catalogue = response.json()["recipes"]
    assert [r["name"] for r in catalogue] == NAMES
    for entry in catalogue:
        recipe = recipe_file(entry["name"])
        assert entry["title"] == recipe["title"]
        assert entry["section"] == recipe["section"]
        assert entry["about"] == recipe.get("about")
        assert entry["steps"] == len(recipe["steps"])
        assert entry["lab"] is recipe.get("lab", False)


# --- playing every recipe --------------------------------------------------------------------

@pytest.mark.parametrize("name", ONE_MACHINE)
def test_every_recipe_plays_and_matches_the_book(api, name):
    lab = recipe_file(name).get("lab", False)
    if lab:
        assert lab_module.can_build(), "the lab recipe must run (root): " + lab_module.NEEDS_ADMIN
        assert api.get("/api/lab").json()["built"] is False
    try:
        started = time.monotonic()
        response = api.post(f"/api/recipes/{name}", json={"wait": True}, timeout=60)
        assert response.status_code == 201, response.text
        run = response.json()
        assert time.monotonic() - started < 30, "a recipe must finish in a class's attention span"
        assert run["name"] == name and run["id"].startswith(name)
        assert run["title"] == recipe_file(name)["title"]
        assert_matches_the_book(run, name)
        assert api.get(f"/api/recipes/runs/{run['id']}").json() == run
        assert_workers_stopped(api, run)
    finally:
        if lab:
            tear_down_lab(api)


def test_listing_2_1_shows_the_real_output_beside_the_book(api):
    run = api.post("/api/recipes/01-listing-2-1", json={"wait": True}).json()
    server = run["workers"]["server"]
    assert server == f"{run['id']}-server"
    listening, bound, says, replied = (step["actual"] for step in run["steps"])
    port = api.get(f"/api/workers/{server}").json()["local"][1]
    assert listening == f"Listening at ('127.0.0.1', {port})"
    assert bound.startswith("The OS assigned me the address ('0.0.0.0', ")
    assert re.fullmatch(r"The client at \('127\.0\.0\.1', \d+\) says 'The time is .+'", says)
    assert re.fullmatch(rf"The server \('127\.0\.0\.1', {port}\) replied "
                        r"'Your data was \d+ bytes long'", replied)
    assert run["steps"][0]["expect"] == "Listening at ('127.0.0.1', 1060)"


def test_step_by_step_until_done(api):
    name = "01-listing-2-1"
    total = len(recipe_file(name)["steps"])
    response = api.post(f"/api/recipes/{name}", json={"step": True})
    assert response.status_code == 201, response.text
    run = response.json()
    assert (run["index"], run["total"], run["done"], run["ok"]) == (1, total, False, False)
    assert len(run["steps"]) == 1 and run["steps"][0]["ok"] is True
    server = run["workers"]["server"]
    assert api.get(f"/api/workers/{server}").json()["state"] == "running"
    for _ in range(total):  # bounded: one call per remaining step, and one spare
        if run["done"]:
            break
        before = run["index"]
        response = api.post(f"/api/recipes/runs/{run['id']}/next")
        assert response.status_code == 200, response.text
        run = response.json()
        assert run["index"] == before + 1
        assert api.get(f"/api/recipes/runs/{run['id']}").json() == run
    assert_matches_the_book(run, name)
    assert_workers_stopped(api, run)
    # `next` on a finished run changes nothing
    again = api.post(f"/api/recipes/runs/{run['id']}/next")
    assert again.status_code == 200 and again.json() == run


def test_without_wait_the_recipe_plays_in_the_background(api):
    name = "02-address-in-use"
    response = api.post(f"/api/recipes/{name}")
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    deadline = time.monotonic() + 15
    while True:
        run = api.get(f"/api/recipes/runs/{run_id}").json()
        if run["done"]:
            break
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
    assert_matches_the_book(run, name)
    assert_workers_stopped(api, run)


def test_runs_have_ids_of_their_own(api):
    first = api.post("/api/recipes/09-mtu", json={"wait": True}).json()
    second = api.post("/api/recipes/09-mtu", json={"wait": True}).json()
    assert first["id"] != second["id"]
    assert set(first["workers"].values()).isdisjoint(second["workers"].values())
    assert first["ok"] and second["ok"]


def test_unknown_recipe_is_404(api):
    response = api.post("/api/recipes/no-such-recipe", json={"wait": True})
    assert response.status_code == 404, response.text
    assert "no recipe 'no-such-recipe'" in response.json()["error"]
    assert "GET /api/recipes" in response.json()["error"]
    assert api.get("/api/recipes/runs/no-such-run").status_code == 404
    assert api.post("/api/recipes/runs/no-such-run/next").status_code == 404


@pytest.mark.parametrize("body", [
    b"{not json",
    b"[true]",
    b'"wait"',
    b'{"wait": true, "speed": 2}',
    b'{"name": "01-listing-2-1"}',
    b'{"wait": "yes"}',  # true and false only, as for POST /api/experiments/impostor
    b'{"step": 1}',
])
def test_bad_body_is_422(api, body):
    before = {w["id"] for w in api.get("/api/workers").json()["workers"]}
    response = api.post("/api/recipes/01-listing-2-1", content=body,
                        headers={"Content-Type": "application/json"})
    if response.status_code == 201:  # wrongly accepted: leave no worker running
        for worker_id in response.json()["workers"].values():
            api.delete(f"/api/workers/{worker_id}")
    assert response.status_code == 422, response.text
    assert response.json()["error"]
    after = {w["id"] for w in api.get("/api/workers").json()["workers"]}
    assert after == before, "a refused request must start nothing"


# --- the page's form routes ------------------------------------------------------------------

def page_client(live, **headers):
    return live.client(auth=False, headers={**live.cookie, "Origin": live.origin, **headers})


def wait_for_run_of(api, name: str, workers_before: set[str], timeout: float = 15.0) -> dict:
    """The newest run of `name` the page started, once done (found by its workers)."""
    deadline = time.monotonic() + timeout
    while True:
        workers = {w["id"] for w in api.get("/api/workers").json()["workers"]}
        new = sorted(w for w in workers - workers_before if w.startswith(f"{name}-"))
        if new:
            run_id = new[0].rsplit("-", 1)[0]
            run = api.get(f"/api/recipes/runs/{run_id}").json()
            if run["done"]:
                return run
        assert time.monotonic() < deadline, f"no finished run of {name} within {timeout} s"
        time.sleep(0.05)


def test_play_form_redirects_without_htmx_and_plays(live, api):
    before = {w["id"] for w in api.get("/api/workers").json()["workers"]}
    with page_client(live) as http:
        response = http.post("/recipes", data={"name": "01-listing-2-1", "mode": "all"})
    assert response.status_code == 303
    assert response.headers["location"] == "/#recipes"
    run = wait_for_run_of(api, "01-listing-2-1", before)
    assert_matches_the_book(run, "01-listing-2-1")


def test_step_form_plays_one_step_then_next(live, api):
    name = "07-connected-refused"
    before = {w["id"] for w in api.get("/api/workers").json()["workers"]}
    with page_client(live, **{"HX-Request": "true"}) as http:
        response = http.post("/recipes", data={"name": name, "mode": "step"})
        assert response.status_code == 200 and response.text == "", response.text
        deadline = time.monotonic() + 10
        while True:  # the first step starts the worker "gone"
            workers = {w["id"] for w in api.get("/api/workers").json()["workers"]}
            new = [w for w in workers - before if w.startswith(f"{name}-")]
            if new:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        run_id = new[0].rsplit("-", 1)[0]
        total = len(recipe_file(name)["steps"])
        for _ in range(4 * total):  # bounded; a step may still be playing when we ask
            run = api.get(f"/api/recipes/runs/{run_id}").json()
            if run["done"]:
                break
            next_step = http.post(f"/recipes/runs/{run_id}/next")
            assert next_step.status_code == 204
            deadline = time.monotonic() + 10
            while api.get(f"/api/recipes/runs/{run_id}").json()["index"] == run["index"]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    assert_matches_the_book(api.get(f"/api/recipes/runs/{run_id}").json(), name)


def test_unknown_recipe_in_the_form(live):
    with page_client(live, **{"HX-Request": "true"}) as http:
        response = http.post("/recipes", data={"name": "<b>nope</b>", "mode": "all"})
    assert response.status_code == 404
    assert "There is no recipe" in response.text
    assert "<b>nope</b>" not in response.text and "&lt;b&gt;nope&lt;/b&gt;" in response.text


# --- recipes are data files a teacher can copy and edit --------------------------------------

def teacher_copy(directory: Path) -> Path:
    """Listing 2-1 copied under a new name, with the teacher's own title and message."""
    recipe = copy.deepcopy(recipe_file("01-listing-2-1"))
    recipe["title"] = "Ms Lovelace's loopback demo"
    client = recipe["steps"][1]
    client["spec"]["message"] = "Hello, class 4B"
    says = recipe["steps"][2]
    says["expect"] = "The client at ('127.0.0.1', 46056) says 'Hello, class 4B'"
    says["look"]["contains"] = "says 'Hello, class 4B'"
    recipe["steps"][3]["look"]["contains"] = "Your data was 15 bytes long"
    path = directory / "90-my-demo.json"
    path.write_text(json.dumps(recipe, indent=2))
    return path


async def test_a_copied_and_edited_recipe_plays(tmp_path):
    teacher_copy(tmp_path)
    async with Supervisor() as supervisor:
        recipes = Recipes(supervisor, directory=tmp_path)
        assert recipes.catalogue() == [{
            "name": "90-my-demo", "title": "Ms Lovelace's loopback demo",
            "section": "Listing 2-1, udp_local.py",
            "about": recipe_file("01-listing-2-1")["about"], "steps": 4, "lab": False}]
        run = await recipes.play_all(recipes.start("90-my-demo"))
        result = run.to_dict()
        assert result["ok"] is True, result
        assert result["title"] == "Ms Lovelace's loopback demo"
        says, replied = result["steps"][2], result["steps"][3]
        assert says["expect"].endswith("says 'Hello, class 4B'")
        assert re.fullmatch(r"The client at \('127\.0\.0\.1', \d+\) says 'Hello, class 4B'",
                            says["actual"])
        assert replied["actual"].endswith("replied 'Your data was 15 bytes long'")
        assert all(not w.alive for w in supervisor.workers.values())


async def test_a_recipe_that_does_not_match_says_so(tmp_path):
    path = teacher_copy(tmp_path)
    recipe = json.loads(path.read_text())
    recipe["steps"][3]["look"]["contains"] = "Your data was 999 bytes long"
    recipe["steps"][3]["look"]["within"] = 0.3
    path.write_text(json.dumps(recipe))
    async with Supervisor() as supervisor:
        recipes = Recipes(supervisor, directory=tmp_path)
        result = (await recipes.play_all(recipes.start("90-my-demo"))).to_dict()
    assert result["done"] is True and result["ok"] is False
    assert [s["ok"] for s in result["steps"]] == [True, True, True, False]
    assert "nothing like 'Your data was 999 bytes long'" in result["steps"][3]["actual"]


async def test_an_unknown_action_fails_its_step_in_plain_words(tmp_path):
    (tmp_path / "dance.json").write_text(json.dumps(
        {"title": "Dance", "steps": [{"say": "Dance.", "do": "dance"}]}))
    async with Supervisor() as supervisor:
        recipes = Recipes(supervisor, directory=tmp_path)
        result = (await recipes.play_all(recipes.start("dance"))).to_dict()
    assert result["ok"] is False
    assert result["steps"][0]["actual"] == "Unknown recipe action 'dance'"


@pytest.mark.parametrize(("text", "message"), [
    ('{"title": "Broken", "steps": [', "The recipe file broken.json is not valid JSON"),
    ("", "The recipe file broken.json is not valid JSON"),
    ('{"title": "No steps"}', "The recipe file broken.json needs a 'steps' list"),
    ('{"title": "Bad steps", "steps": {}}', "The recipe file broken.json needs a 'steps' list"),
    ('["a list"]', "The recipe file broken.json needs a 'steps' list"),
])
async def test_a_broken_recipe_file_is_a_clear_bad_spec(tmp_path, text, message):
    teacher_copy(tmp_path)
    (tmp_path / "broken.json").write_text(text)
    async with Supervisor() as supervisor:
        recipes = Recipes(supervisor, directory=tmp_path)
        with pytest.raises(BadSpec) as caught:
            recipes.catalogue()
        assert caught.value.message.startswith(message), caught.value.message
        assert caught.value.status == 422
        with pytest.raises(BadSpec):
            recipes.start("90-my-demo")


# --- the read-only viewer link ---------------------------------------------------------------

def test_viewer_link_is_printed_and_logs_in(live):
    token = viewer_token(live)
    with live.client(auth=False) as http:
        response = http.get(f"/?view={token}")
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"udplab_view_{live.port}={token};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert f"udplab_{live.port}=" not in cookie, "the viewer never gets the teacher's cookie"


def test_viewer_page_is_read_only(live):
    with live.client(auth=False, headers=viewer_cookie(live)) as http:
        response = http.get("/")
    assert response.status_code == 200
    assert "read-only view" in response.text
    assert re.search(r'<body[^>]*class="[^"]*\bviewer\b', response.text)
    assert 'id="recipe-form"' not in response.text
    assert 'id="recipe-next"' not in response.text


def test_viewer_can_read_the_api(live, api):
    worker = api.start(kind="server", port=0)
    with live.client(auth=False, headers=viewer_cookie(live)) as http:
        listed = http.get("/api/workers")
        assert listed.status_code == 200
        assert worker["id"] in {w["id"] for w in listed.json()["workers"]}
        assert http.get(f"/api/workers/{worker['id']}").json()["state"] == "running"
        assert http.get("/api/recipes").status_code == 200


@pytest.mark.parametrize("origin", [None, "own"])
def test_viewer_cannot_change_anything(live, api, origin):
    worker = api.start(kind="server", port=0)
    name = f"viewer-{secrets.token_hex(4)}"
    headers = dict(viewer_cookie(live))
    if origin:
        headers["Origin"] = live.origin
    attempts = [
        ("POST", "/workers", {"data": {"kind": "server", "port": "0", "name": name}}),
        ("POST", "/api/workers", {"json": {"kind": "server", "port": 0, "name": name}}),
        ("DELETE", f"/api/workers/{worker['id']}", {}),
        ("POST", f"/workers/{worker['id']}/pause", {}),
        ("POST", f"/workers/{worker['id']}/stop", {}),
        ("POST", "/workers/clear", {}),
        ("POST", "/recipes", {"data": {"name": "01-listing-2-1", "mode": "all"}}),
        ("POST", "/api/recipes/01-listing-2-1", {"json": {"wait": True}}),
        ("POST", "/lab", {}),
        ("POST", "/api/lab", {}),
        ("POST", "/experiments/impostor", {}),
    ]
    runs_before = api.get("/api/workers").json()["workers"]
    with live.client(auth=False, headers=headers) as http:
        for method, path, body in attempts:
            response = http.request(method, path, **body)
            assert response.status_code == 403, (method, path, response.text)
            assert READ_ONLY in response.text, (method, path, response.text)
    assert api.get(f"/api/workers/{worker['id']}").json()["state"] == "running"
    assert api.get(f"/api/workers/{name}").status_code == 404
    assert api.get("/api/lab").json()["built"] is False
    assert len(api.get("/api/workers").json()["workers"]) == len(runs_before)


def test_viewer_token_is_not_a_bearer_token(live):
    token = viewer_token(live)
    name = f"viewer-bearer-{secrets.token_hex(4)}"
    with live.client(auth=False, headers={"Authorization": f"Bearer {token}"}) as http:
        response = http.post("/api/workers", json={"kind": "server", "port": 0, "name": name})
        assert response.status_code == 401, response.text
        assert http.get("/api/workers").status_code == 401
    with live.client() as api:
        assert api.get(f"/api/workers/{name}").status_code == 404


def test_viewer_token_is_not_the_teachers_cookie(live):
    """The viewer token in the teacher's cookie name is no session at all."""
    with live.client(auth=False, headers={"Cookie": f"udplab_{live.port}={viewer_token(live)}",
                                          "Origin": live.origin}) as http:
        assert http.get("/api/workers").status_code == 401
        assert http.post("/api/workers", json={"kind": "server", "port": 0}).status_code == 401


@pytest.mark.parametrize("wrong", ["wrong", "", "x" * 43])
def test_wrong_view_token_is_401(live, wrong):
    with live.client(auth=False) as http:
        response = http.get("/", params={"view": wrong})
    assert response.status_code == 401, response.text
    assert "set-cookie" not in response.headers


def test_teachers_token_in_the_view_link_is_401(live):
    """`?view=` takes the viewer token only: the teacher's token there opens nothing."""
    with live.client(auth=False) as http:
        response = http.get("/", params={"view": live.token})
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
