"""The README's tours, run as written, twice, against a fresh embedded demo.

README.md says every block fenced as ```` ```sh tour ```` can be pasted in order into one bash session after
`make demo` and `manage.py runserver &`, and pasted again. This test does exactly that, isolated from the
repository's own `var/`:

* A temporary directory plays the repository root the README assumes: it holds a symlink `.venv` to the
  virtualenv running the tests (the repository's `.venv` under `make test`), a symlink `manage.py` to the
  repository's `manage.py` (Python puts the *resolved* script directory on `sys.path`, so the project is
  imported from the repository), and the demo's `var/demo/`. The commands run there, so `.venv/bin/python`,
  `var/demo/token.txt` and the files the tour writes (`grid.ttl`, `broken.ttl`, `profile.png`) work as
  written and nothing lands in the repository (only the shared SimBench profile cache under the repository's
  `var/cache/`, which `make demo` fills too).
* The environment is the embedded default of `make demo`: `DATABASE_URL=sqlite:///<tmp>/tour.sqlite3`,
  `CELERY_BROKER_URL=` (tasks run in process), `GRIDTWIN_DEMO_DIR=<tmp>/var/demo`, and no
  `DJANGO_SETTINGS_MODULE`, so `manage.py` picks its default (`config.settings.dev`). Nothing of the test
  process's PostgreSQL settings reaches the subprocesses; this test uses no database fixture itself.
* `manage.py migrate` and `manage.py demo --simbench 1-LV-rural1--0-sw` run as `make demo` runs them, then
  `manage.py runserver 127.0.0.1:<free port> --noreload` serves the API until the end of the test.
* The tour blocks are joined in order into one script. The only substitution is `127.0.0.1:8000` → the
  server's address (the demo directory *is* `var/demo/` under the working directory, so the token path needs
  none). Around the README's text the test adds instrumentation only: a DEBUG trap that prints a marker line
  with each top-level command to stdout (so each answer can be attributed to its command) and, after the
  last block, a listing of the ids and IRIs the tour captured.
* The script runs twice, each time as a fresh `bash -e -o pipefail -x` (stricter than a paste into an
  interactive shell: any failing command or pipeline stage stops the run; curl -s exits 0 on the 4xx answers
  the tour provokes on purpose), and the README's claims are checked on both runs' answers.

Needs bash, curl and GNU date (`date -d`), as the README does.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOUR_BLOCK = re.compile(r"^```sh tour\n(.*?)^```[ \t]*$", re.S | re.M)
MARK = "@@@ "
MARK_SPLIT = re.compile(r"\n@@@ ([^\n]*)\n")
CAPTURED = ("DEMO_GRID", "GRID", "POINT", "FEEDER_ID", "BATCH", "SNAPSHOT", "SERIES", "HOSTING", "FEEDER", "AGREEMENT", "AGGREGATOR",
            "OFFER", "TELEMETRY", "TOPOLOGY", "REQUEST")
# Instrumentation around the README's text: a marker before each top-level command (command substitutions and
# functions do not inherit the trap), and the captured variables at the end.
PREAMBLE = (
    "__tour_mark() { printf '\\n" + MARK + "%s\\n' \"${1//$'\\n'/ }\"; }\n"
    "trap '__tour_mark \"$BASH_COMMAND\"' DEBUG\n"
)
EPILOGUE = (
    "\ntrap - DEBUG\n"
    "printf '\\n" + MARK + "captured\\n'\n"
    f"for __name in {' '.join(CAPTURED)}; do printf '%s=%s\\n' \"$__name\" \"${{!__name}}\"; done\n"
)
DEMO_GRID_NAME = "SimBench 1-LV-rural1--0-sw"
TOUR_GRID_NAME = "SimBench 1-MV-rural--0-sw"


def tour_script(address: str) -> str:
    readme = (REPO / "README.md").read_text()
    blocks = TOUR_BLOCK.findall(readme)
    assert len(blocks) >= 8, f"README.md has {len(blocks)} ```sh tour blocks"
    return PREAMBLE + "\n".join(blocks).replace("127.0.0.1:8000", address) + EPILOGUE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def embedded_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}
           and not k.startswith(("CELERY_", "GRIDTWIN_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp}/tour.sqlite3", CELERY_BROKER_URL="", GRIDTWIN_DEMO_DIR=str(tmp / "var" / "demo"))
    return env


def run_checked(args: list[str], cwd: Path, env: dict, timeout: int) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def wait_until_answering(url: str, server: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"runserver exited {server.returncode}:\n{log.read_text()[-3000:]}"
        try:
            urllib.request.urlopen(url, timeout=2).close()  # noqa: S310 - a local URL we built
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer (401, 404 …) means it is serving
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"runserver did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")


class TourRun:
    """One run of the joined script: each top-level command with what it printed, and the captured variables."""

    def __init__(self, done: subprocess.CompletedProcess, number: int):
        self.number = number
        self.returncode = done.returncode
        self.stdout = done.stdout
        self.trace = done.stderr
        parts = MARK_SPLIT.split("\n" + done.stdout)
        self.commands = list(zip(parts[1::2], parts[2::2], strict=True))
        captured = dict(self.commands).get("captured", "")
        self.vars = dict(line.split("=", 1) for line in captured.splitlines() if "=" in line)

    def outputs(self, needle: str) -> list[str]:
        found = [out.strip() for command, out in self.commands if needle in command]
        assert found, f"run {self.number}: no command containing {needle!r}"
        return found

    def output(self, needle: str) -> str:
        found = self.outputs(needle)
        assert len(found) == 1, f"run {self.number}: {len(found)} commands contain {needle!r}"
        return found[0]

    def exact(self, command: str) -> str:
        found = [out.strip() for c, out in self.commands if c.strip() == command]
        assert len(found) == 1, f"run {self.number}: {len(found)} commands are {command!r}"
        return found[0]

    def json(self, needle: str, index: int | None = None, exact: bool = False):
        text = self.exact(needle) if exact else self.output(needle) if index is None else self.outputs(needle)[index]
        try:
            return json.loads(text)
        except ValueError:
            pytest.fail(f"run {self.number}: {needle!r} did not answer JSON: {text[:500]!r}")


def run_tour(script: Path, cwd: Path, env: dict, number: int) -> TourRun:
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-x", str(script)], cwd=cwd, env=env,  # noqa: S603, S607
                          capture_output=True, text=True, timeout=900, check=False)
    run = TourRun(done, number)
    assert run.returncode == 0, (f"tour run {number} exited {run.returncode}; last commands and answers:\n"
                                 + "\n".join(f"$ {c}\n{o[:800]}" for c, o in run.commands[-4:])
                                 + "\n--- trace (tail) ---\n" + run.trace[-4000:])
    return run


def check_run(run: TourRun, tmp: Path, first: bool) -> None:
    """The README's claims, one after the other in README order, on one run's answers."""
    n = run.number
    ids = {name: run.vars.get(name, "") for name in CAPTURED}
    for name in ("DEMO_GRID", "GRID", "POINT", "FEEDER_ID", "BATCH", "SNAPSHOT", "SERIES", "HOSTING", "AGREEMENT", "REQUEST"):
        assert ids[name].isdigit(), f"run {n}: {name} captured {ids[name]!r}"
    assert ids["AGGREGATOR"].startswith("https://") and ids["FEEDER"].startswith("https://"), ids

    # "Import a SimBench grid … and see what you operate"
    grids = {g["name"]: g["id"] for g in run.json('curl -s -H "$AUTH" $API/grids/', exact=True)["results"]}
    assert grids.get(DEMO_GRID_NAME) == int(ids["DEMO_GRID"]) and grids.get(TOUR_GRID_NAME) == int(ids["GRID"]), grids
    lines = run.json('lines/?grid=$GRID&limit=3')
    assert len(lines["results"]) == 3 and {line["grid"] for line in lines["results"]} == {int(ids["GRID"])}, lines

    # "Export it as Turtle", "the same file twice changes nothing"
    turtle = (tmp / "grid.ttl").read_text()
    assert turtle.startswith("@prefix") and 'cim:Conductor.length "' in turtle
    published = run.json("--data-binary @grid.ttl")
    assert published["id"] == int(ids["GRID"]) and published["created"] is False and published["changed"] is False, published

    # "See a SHACL rejection … each violation (focus node, path, value, message, severity), or the report graph"
    assert 'cim:Conductor.length "-' in (tmp / "broken.ttl").read_text()
    rejected = run.json('--data-binary @broken.ttl $API/models/')
    assert rejected["reason"] == "shacl_violation" and rejected["conforms"] is False, rejected
    violation = rejected["violations"][0]
    assert {"focus_node", "path", "value", "message", "severity"} <= violation.keys(), violation
    assert violation["path"].endswith("Conductor.length") and violation["value"].startswith("-"), violation
    report = run.output("report=turtle")
    assert "sh:ValidationReport" in report and "sh:conforms false" in report, report[:500]

    # Telemetry: JSON, CSV and SenML batches from a fresh gateway; sending a reading twice stores it once
    batch = run.json("$API/telemetry/batches/$BATCH", 0)
    assert batch["id"] == int(ids["BATCH"]) and batch["status"] == "succeeded" and batch["rejected_url"], batch
    assert batch["counts"] == ({"received": 2, "accepted": 2, "duplicate": 0, "rejected": 0} if first
                               else {"received": 2, "accepted": 0, "duplicate": 2, "rejected": 0}), batch
    csv_batch = run.json("Content-Type: text/csv")
    assert csv_batch["status"] == "succeeded" and csv_batch["counts"]["received"] == 1, csv_batch
    assert csv_batch["counts"]["accepted" if first else "duplicate"] == 1, csv_batch
    senml = run.json("application/senml+json")
    assert senml["status"] == "succeeded" and senml["counts"]["received"] == 1 and senml["counts"]["rejected"] == 0, senml
    assert senml["counts"]["accepted" if first else "duplicate"] == 1, senml
    assert "results" in run.json("$BATCH/rejected")
    hourly = run.json("resolution=hour")
    assert hourly["resolution"] == "hour" and hourly["unit"] == "MW", hourly
    (series,) = hourly["series"]
    assert series["point"] == int(ids["POINT"]), hourly
    assert [(r["ts"], r["count"], round(r["mean"], 6)) for r in series["readings"]] == [("2024-05-01T12:00:00Z", 3, 0.0044)], hourly
    daily = run.json("resolution=day&group=all")
    assert daily["resolution"] == "day" and [r["count"] for r in daily["series"][0]["readings"]] == [3], daily
    latest = run.json("$API/telemetry/latest")["latest"]
    assert latest and {"point", "quantity", "ts", "value", "unit"} <= latest[0].keys(), latest[:2]

    # Load flows: solved on the command line, queued over HTTP, read back
    head = run.output("head -c 300")
    assert head.startswith("run ") and '"kind": "snapshot"' in head and '"status": "succeeded"' in head, head
    queued = run.json('"kind": "timeseries", "start": "2016-06-21T00:00Z"')
    assert queued["kind"] == "timeseries" and queued["steps_total"] == 96 and queued["parameters"]["vm_min_pu"] == 0.95, queued
    run_series = run.json('curl -s -H "$AUTH" $API/loadflow/runs/$SERIES', exact=True)
    assert run_series["id"] == int(ids["SERIES"]) and run_series["status"] == "succeeded", run_series
    assert run_series["steps_done"] == 96 and "progress_percent" in run_series and run_series["summary"], run_series
    buses = run.json("element=bus&vm_below=1.03")["results"]
    assert buses and all(b["vm_pu"] < 1.03 for b in buses), buses[:3]
    line_series = run.json("--data-urlencode element=line")
    assert line_series["element"] == "line" and len(line_series["time"]) == 96, str(line_series)[:300]
    assert "results" in run.json("$SERIES/violations")
    weeks = run.json("$SERIES/en50160")["weeks"]
    assert weeks and {"bus", "inside_percent", "compliant"} <= weeks[0].keys(), weeks[:2]
    hosting = run.json("$HOSTING/hosting-capacity")["results"]
    assert hosting and all(h["pv_kw"] > 0 and h["load_kw"] > 0 and h["pv_limited_by"] for h in hosting), hosting[:2]
    assert (tmp / "profile.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # The steward's and the consumer's five minutes: an offer published, found in the catalog, requested …
    assert ids["OFFER"].startswith("urn:uuid:"), ids["OFFER"]
    catalog = run.json('"$CATALOG&category=telemetry"', 0)
    assert catalog["@type"] == "dcat:Catalog" and catalog["count"] >= 1, str(catalog)[:500]
    assert {d["dct:identifier"] for d in catalog["dcat:dataset"]} == {ids["TELEMETRY"]}, str(catalog)[:500]
    assert all(d["gt:feeder"]["@id"] == ids["FEEDER"] and d["gt:granted"] is False for d in catalog["dcat:dataset"])
    assert ids["OFFER"] in run.outputs('"$CATALOG&category=telemetry"')[0]
    follow = [json.loads(out) for command, out in run.commands if command.strip() == 'curl -s -H "$AGG" $API/sharing/requests/$REQUEST']
    assert len(follow) == 2 and follow[0]["status"] == "pending", follow
    inbox = run.json('"$API/sharing/requests?status=pending"')["results"]
    assert int(ids["REQUEST"]) in [r["id"] for r in inbox], inbox[:2]
    # … approved by the steward …
    followed = follow[1]
    assert followed["status"] == "approved" and followed["agreement"]["id"] == int(ids["AGREEMENT"]), followed
    assert followed["datasets"] == sorted([ids["TELEMETRY"], ids["TOPOLOGY"]]), followed
    policy = run.output('-H "Accept: text/turtle" $API/sharing/agreements/$AGREEMENT')
    assert "a odrl:Agreement" in policy and 'gt:status "active"' in policy and ids["AGGREGATOR"] in policy, policy[:500]
    # … read hourly, queried in SPARQL, refused what it does not grant …
    shared = run.json('$API/shared/telemetry?$READ&$WINDOW"', 0)
    assert shared["resolution"] == "hour" and shared["group_by"] == "feeder", str(shared)[:500]
    (group,) = shared["series"]
    assert group["group"] == ids["FEEDER"] and not group["suppressed"] and group["meters"] >= 5, str(group)[:500]
    assert len(group["buckets"]) == 24 and all(b["meters"] >= 5 for b in group["buckets"]), str(group)[:500]
    assert run.json("resolution=raw")["reason"] == "resolution_not_granted"
    assert run.json("purpose=research")["reason"] == "purpose_not_granted"
    assert run.json('"$API/telemetry/readings?feeder=$FEEDER_ID&$WINDOW"')["reason"] == "not_permitted"
    counted = run.output("GROUP BY ?class")
    assert counted.splitlines()[0].strip() == "class,nodes" and "TopologicalNode" in counted, counted[:500]
    assert run.json("SERVICE <http://example.org/sparql>")["reason"] == "sparql_forbidden"
    decision = run.json("$API/sharing/decisions")
    assert decision["allowed"] is True and decision["rule"] == "agreement:telemetry", decision
    assert decision["obligations"]["resolution"] == "hour" and "owner" in decision["obligations"]["drop_fields"], decision
    # … and the DSO reads who saw what, revokes, and the next read is refused
    audit = run.json("$API/sharing/audit?limit=5")["results"]
    assert len(audit) == 5 and any(entry["participant_iri"] == ids["AGGREGATOR"] for entry in audit), audit[:2]
    assert run.json("/revoke")["status"] == "revoked"
    after = run.json('$API/shared/telemetry?$READ&$WINDOW"', 1)
    assert after["reason"] == "not_found", after
    assert run.output("manage.py verify_audit").startswith("audit chain intact"), run.output("manage.py verify_audit")


@pytest.mark.slow
def test_readme_tours_run_as_written_twice(tmp_path):
    for tool in ("bash", "curl", "date"):
        if shutil.which(tool) is None:
            pytest.skip(f"the README's tour needs {tool}")
    venv = Path(sys.prefix) if sys.prefix != sys.base_prefix else REPO / ".venv"
    if not (venv / "bin" / "python").exists():
        pytest.skip(f"no virtualenv at {venv} for .venv/bin/python")
    (tmp_path / ".venv").symlink_to(venv, target_is_directory=True)
    (tmp_path / "manage.py").symlink_to(REPO / "manage.py")
    env = embedded_env(tmp_path)
    python = ".venv/bin/python"

    run_checked([python, "manage.py", "migrate", "--noinput", "-v0"], tmp_path, env, timeout=300)
    run_checked([python, "manage.py", "demo", "--simbench", "1-LV-rural1--0-sw"], tmp_path, env, timeout=900)
    assert (tmp_path / "var" / "demo" / "token.txt").is_file()

    address = f"127.0.0.1:{free_port()}"
    script = tmp_path / "tour.sh"
    script.write_text(tour_script(address))
    log = tmp_path / "runserver.log"
    with log.open("w") as log_file:
        server = subprocess.Popen([python, "manage.py", "runserver", address, "--noreload"], cwd=tmp_path, env=env,  # noqa: S603
                                  stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(f"http://{address}/api/v1/", server, log)
        first = run_tour(script, tmp_path, env, 1)
        check_run(first, tmp_path, first=True)
        second = run_tour(script, tmp_path, env, 2)
        check_run(second, tmp_path, first=False)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)

    # pasted again: the same grids and meters are found, not assumed; a new agreement, batch and runs each time
    for name in ("DEMO_GRID", "GRID", "POINT", "FEEDER_ID", "FEEDER", "AGGREGATOR", "TELEMETRY", "TOPOLOGY"):
        assert first.vars[name] == second.vars[name], (name, first.vars[name], second.vars[name])
    for name in ("BATCH", "SNAPSHOT", "SERIES", "HOSTING", "AGREEMENT", "REQUEST"):
        assert int(second.vars[name]) > int(first.vars[name]), (name, first.vars[name], second.vars[name])
