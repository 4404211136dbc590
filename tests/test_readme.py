"""Every shell command the README shows runs on the current tree (issue 15, item 1).

The commands are those of the README's ```sh blocks, in order, each run with ``bash`` from the
repository root with a timeout.  Placeholders are filled the same way for every command:

* the documented ports (8080 SBI, 9090 metrics, 9901 admin, 9000 the producer) become free ones,
  and ``config/`` becomes a copy of the config folder whose ``local.yaml`` has those ports (so
  ``nfmesh ca example --dir config/certs`` writes into the copy, not the checkout);
* ``--duration N`` becomes ``--duration 2`` (the demo), ``$NFMESH_ADMIN`` points ``nfmesh ctl`` at
  the admin port, and ``NFMESH_SKIP_SETUP=1`` tells ``scripts/setup.sh`` that the tree is set up.

Commands that start servers (``nfmesh run``, the stand-in producer) are started, probed until
their ports accept, left running for the commands after them and stopped at the end (SIGTERM:
the gateway must exit 0).  ``bash scripts/test.sh`` is the command that runs this test, so it is
only syntax-checked here.  A command that exits non-zero fails the test, and so does a curl
``-i`` that does not get a 2xx.  What needs a Kubernetes cluster (``helm install``) is written in
the README's prose, not in a ```sh block.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

from tests.local_gateway import (
    ROOT,
    config_copy,
    free_ports,
    read_output,
    renumber,
    start,
    stop,
    wait_port,
)

pytestmark = pytest.mark.interop

README = ROOT / "README.md"
COMMAND_TIMEOUT_S = 30
SERVERS = {  # command prefix -> the ports that must accept before the next command
    ".venv/bin/python -m perf.capacity_producer": ("producer",),
    ".venv/bin/nfmesh run": ("sbi", "metrics", "admin"),
}
SYNTAX_ONLY = {"bash scripts/test.sh": "runs the whole suite, this test included"}


def readme_commands(text: str) -> list[str]:
    """The commands of the ```sh blocks: comment lines dropped, continuation lines (a trailing
    backslash, or a quoted argument spanning lines) joined."""
    out: list[str] = []
    in_sh = False
    pending = ""
    for line in text.splitlines():
        if line.startswith("```"):
            assert not pending, f"unfinished command before {line!r}: {pending!r}"
            in_sh = not in_sh and line.strip() == "```sh"
            continue
        if not in_sh or (not pending and (not line.strip() or line.lstrip().startswith("#"))):
            continue
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the argument goes on on the next line
            continue
        out.append(pending)
        pending = ""
    return out


def fill(cmd: str, ports: dict[str, int], config_dir: str) -> str:
    cmd = renumber(cmd, ports)
    cmd = re.sub(r"(?<![\w/.-])config/", config_dir + "/", cmd)
    return re.sub(r"--duration \d+(\.\d+)?", "--duration 2", cmd)


def test_readme_is_short_and_shows_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 250
    cmds = [c.split("#")[0].strip() for c in readme_commands(text)]
    assert "bash scripts/test.sh" in cmds
    assert any(c.startswith("bash scripts/demo.sh") for c in cmds)
    assert any(c.startswith(".venv/bin/nfmesh run -c config/local.yaml") for c in cmds)
    for claim in ("ProblemDetails for every error", "never time anything"):
        assert claim not in text


def test_readme_config_table_names_every_section() -> None:
    from gateway.config import Config

    rows = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert set(Config.__struct_fields__) <= named, set(Config.__struct_fields__) - named


def test_every_readme_command_runs(tmp_path) -> None:
    ports = free_ports(["sbi", "metrics", "admin", "producer"])
    config_dir = str(config_copy(tmp_path, ports))
    env = dict(os.environ, NFMESH_ADMIN=f"http://127.0.0.1:{ports['admin']}",
               NFMESH_SKIP_SETUP="1")
    servers: list[tuple[str, subprocess.Popen]] = []
    ran: list[str] = []
    try:
        for i, written in enumerate(readme_commands(README.read_text())):
            bare = written.split("#")[0].strip()
            if bare in SYNTAX_ONLY:
                script = bare.split()[1]
                check = subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True,
                                       text=True, timeout=COMMAND_TIMEOUT_S)
                assert check.returncode == 0, (written, check.stderr)
                continue
            cmd = fill(written, ports, config_dir)
            server = next((names for prefix, names in SERVERS.items()
                           if cmd.startswith(prefix)), None)
            if server is not None:
                proc = start(cmd, tmp_path / f"server-{i}.log", shell=True, env=env)
                servers.append((written, proc))
                for name in server:
                    wait_port(ports[name], proc)
                ran.append(written)
                continue
            r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
            assert r.returncode == 0, f"README command failed ({r.returncode}):\n{written}\n" \
                f"ran as: {cmd}\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-2000:]}"
            if cmd.startswith("curl -i"):
                assert re.match(r"HTTP/\S+ 2\d\d", r.stdout), (written, r.stdout[:500])
            if "nnrf-disc" in cmd:
                assert '"nfType":"AUSF"' in r.stdout.replace(" ", ""), r.stdout[:500]
            ran.append(written)
    finally:
        codes = [(written, stop(proc), proc) for written, proc in reversed(servers)]
    for written, code, proc in codes:
        assert code == 0, f"{written} exited {code}: {read_output(proc)}"
    assert len(ran) >= 12, ran
