"""A real `dagster dev` (webserver, daemon, code server) on loopback for the tests that need Dagster's own
run launching: runs go through the code server as they do for users, so crashes, retries and run
status are Dagster's, not a test's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from .conftest import REPO

LOCATION = {"repositoryLocationName": "mosaic_assets", "repositoryName": "__repository__"}
RUN_DONE = {"SUCCESS", "FAILURE", "CANCELED"}


class DagsterDev:
    """A running `dagster dev` and the GraphQL calls the tests make to it."""

    def __init__(self, url: str, log: Path) -> None:
        self.url, self.log = url, log

    def gql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def launch_partition(self, asset_path: list[str], partition: str) -> str:
        """Launch one run materializing one partition of one asset (what the UI's Materialize does)."""
        data = self.gql(
            "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename "
            "... on LaunchRunSuccess { run { runId } } ... on PythonError { message } "
            "... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }",
            {
                "p": {
                    "selector": {**LOCATION, "jobName": "__ASSET_JOB", "assetSelection": [{"path": asset_path}]},
                    "mode": "default",
                    "runConfigData": {},
                    "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
                }
            },
        )
        result = data["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def run_status(self, run_id: str) -> str:
        data = self.gql("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id})
        return data["runOrError"]["status"]

    def run_messages(self, run_id: str) -> list[dict]:
        data = self.gql(
            "query($id: ID!) { logsForRun(runId: $id, limit: 10000) { ... on EventConnection { events { "
            "__typename ... on MessageEvent { message } ... on EngineEvent { metadataEntries { label "
            "... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } } } } } } }",
            {"id": run_id},
        )
        return data["logsForRun"]["events"]

    def wait_for(self, what: str, done: Callable[[], object], timeout: float = 300.0, every: float = 1.0) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = done()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; log tail:\n{self.log_tail()}")

    def wait_for_run(self, run_id: str, timeout: float = 300.0) -> str:
        return self.wait_for(  # type: ignore[return-value]
            f"run {run_id} to finish", lambda: (s := self.run_status(run_id)) in RUN_DONE and s, timeout
        )

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@contextmanager
def dagster_dev(env: dict[str, str], folder: Path, port: int) -> Iterator[DagsterDev]:
    """`dagster dev` on 127.0.0.1:``port`` with ``env`` (its DAGSTER_HOME and spec), stopped (the whole
    process group) on exit."""
    log_path = folder / f"dagster-dev-{port}.log"
    dagster = str(Path(sys.executable).with_name("dagster"))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = DagsterDev(f"http://127.0.0.1:{port}", log_path)
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, server.log_tail()
                assert time.monotonic() < deadline, "dagster dev did not come up in 120 s:\n" + server.log_tail()
                try:
                    if requests.get(f"{server.url}/server_info", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    pass
                time.sleep(1)
            yield server
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
