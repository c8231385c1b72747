"""The decisions of ``allinone setup`` (allinone.install), without root, apt or Docker.

The pure helpers are tested directly; ``run_setup`` is tested only for the promise
that a step it cannot do ends in one actionable line and exit code 1, never a
traceback, with the system probes replaced by fakes.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from allinone import install
from allinone.config import DEFAULT_BASE_IMAGE, PULLABLE_BASE_IMAGE
from allinone.install import (
    REQUIRED_PACKAGES,
    apt_install_command,
    debootstrap_command,
    docker_not_answering_message,
    is_installed_status,
    is_stale_pidfile,
    missing_commands,
    missing_packages,
    no_apt_message,
    not_root_message,
    parse_apt_mirror,
    parse_dpkg_query,
    pull_candidates,
    python_version_ok,
    run_setup,
    service_needs_quieting,
    tail,
    verify_command,
)


@pytest.mark.parametrize(
    ("status", "installed"),
    [
        ("install ok installed", True),
        ("hold ok installed", True),
        ("deinstall ok config-files", False),
        ("install ok half-configured", False),
        ("install ok unpacked", False),
        ("unknown ok not-installed", False),
        ("", False),
    ],
)
def test_is_installed_status(status: str, installed: bool) -> None:
    assert is_installed_status(status) is installed


def test_parse_dpkg_query() -> None:
    out = (
        "docker.io\tinstall ok installed\n"
        "etcd-server\tdeinstall ok config-files\n"
        "debootstrap\tunknown ok not-installed\n"
        "garbage line without tab\n"
    )
    assert parse_dpkg_query(out) == {
        "docker.io": "install ok installed",
        "etcd-server": "deinstall ok config-files",
        "debootstrap": "unknown ok not-installed",
    }


def test_parse_dpkg_query_several_architectures_installed_wins() -> None:
    out = "libfoo\tinstall ok installed\nlibfoo\tunknown ok not-installed\n"
    assert is_installed_status(parse_dpkg_query(out)["libfoo"])


def test_missing_packages_keeps_the_required_order() -> None:
    status = {
        "docker.io": "install ok installed",
        "etcd-server": "deinstall ok config-files",
        # docker-registry: never heard of, so absent from dpkg-query's output
        "debootstrap": "install ok installed",
        "chromium": "install ok installed",
        "graphviz": "install ok installed",
    }
    assert missing_packages(status) == ["etcd-server", "docker-registry"]


def test_nothing_missing_when_all_installed() -> None:
    status = {pkg: "install ok installed" for pkg in REQUIRED_PACKAGES}
    assert missing_packages(status) == []


def test_everything_missing_on_an_empty_machine() -> None:
    assert missing_packages({}) == list(REQUIRED_PACKAGES)


def test_apt_command_is_noninteractive_and_names_only_the_missing() -> None:
    cmd = apt_install_command(["etcd-server", "debootstrap"])
    assert cmd[:2] == ["apt-get", "install"]
    assert "-y" in cmd
    assert "Dpkg::Options::=--force-confold" in cmd  # no conffile prompt without stdin
    assert cmd[-2:] == ["etcd-server", "debootstrap"]


def test_not_root_message_gives_the_exact_command() -> None:
    message = not_root_message(["etcd-server", "docker-registry"])
    assert "sudo apt-get install -y etcd-server docker-registry" in message
    assert "sudo allinone setup" in message
    assert "\n" not in message


def test_missing_commands_without_apt() -> None:
    on_path = {"docker": "/usr/bin/docker", "dockerd": "/usr/bin/dockerd",
               "registry": "/usr/local/bin/registry", "dot": "/usr/bin/dot"}
    assert missing_commands(on_path.get) == ["etcd"]
    assert "etcd" in no_apt_message(["etcd"])


def test_docker_messages() -> None:
    not_root = docker_not_answering_message(None, is_root=False, systemd=True)
    assert "sudo systemctl start docker" in not_root
    assert "sudo allinone setup" in not_root
    no_systemd = docker_not_answering_message(None, is_root=False, systemd=False)
    assert "dockerd" in no_systemd
    remote = docker_not_answering_message("tcp://127.0.0.1:2375", is_root=True, systemd=False)
    assert "DOCKER_HOST=tcp://127.0.0.1:2375" in remote


def test_stale_pidfile() -> None:
    def alive(pid: int) -> bool:
        return pid == 42

    assert not is_stale_pidfile("42\n", alive)
    assert is_stale_pidfile("43\n", alive)
    assert is_stale_pidfile("", alive)
    assert is_stale_pidfile("not a pid", alive)


def test_service_needs_quieting() -> None:
    assert service_needs_quieting(active=True, enabled=False)
    assert service_needs_quieting(active=False, enabled=True)
    assert not service_needs_quieting(active=False, enabled=False)


def test_pull_candidates() -> None:
    # Our own name exists on no public registry: only the pullable image is tried.
    assert pull_candidates(DEFAULT_BASE_IMAGE) == [PULLABLE_BASE_IMAGE]
    assert pull_candidates("python:3.12-slim") == ["python:3.12-slim", PULLABLE_BASE_IMAGE]
    assert pull_candidates(PULLABLE_BASE_IMAGE) == [PULLABLE_BASE_IMAGE]


def test_parse_apt_mirror_one_line_format() -> None:
    text = (
        "# comment\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/x.gpg arch=amd64] http://mirror.example/debian/ "
        "bookworm main contrib\n"
    )
    assert parse_apt_mirror(text) == "http://mirror.example/debian"


def test_parse_apt_mirror_deb822() -> None:
    text = (
        "Types: deb\n"
        "URIs: http://deb.debian.org/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb deb-src\n"
        "# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://deb.debian.org/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    assert parse_apt_mirror(text) == "http://deb.debian.org/debian"


def test_parse_apt_mirror_none() -> None:
    assert parse_apt_mirror("deb http://x/ubuntu jammy main\n") is None
    assert parse_apt_mirror("Types: deb\nURIs: http://x\nSuites: bookworm\nEnabled: no\n") is None


def test_commands_for_the_base_image() -> None:
    assert debootstrap_command(Path("/var/tmp/r"), "http://m/debian") == [
        "debootstrap", "--variant=minbase", "--include=python3", "bookworm", "/var/tmp/r",
        "http://m/debian",
    ]
    cmd = verify_command("img:1")
    # python3 through the image's PATH: /usr/local/bin in python:3.11-slim, /usr/bin
    # in the debootstrapped one.
    assert cmd[:6] == ["docker", "run", "--rm", "--network", "none", "img:1"]
    assert cmd[6] == "python3"


@pytest.mark.parametrize(
    ("out", "ok"), [("3.11\n", True), ("3.12", True), ("3.9", False), ("", False), ("x", False)]
)
def test_python_version_ok(out: str, ok: bool) -> None:
    assert python_version_ok(out) is ok


def test_tail() -> None:
    assert tail("a\n\nb\nc\n", 2) == "b | c"
    assert tail("") == "(no output)"


def fake_run(
    installed: Sequence[str] = REQUIRED_PACKAGES, *, docker_up: bool = True
) -> Any:
    """A stand-in for install._run on a machine where ``installed`` are the installed
    packages, no packaged service runs, the base image exists and runs Python 3.11."""

    def run(cmd: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        def done(rc: int, out: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.CompletedProcess(list(cmd), rc, out, "")

        if cmd[:2] == ["dpkg-query", "-W"]:
            # dpkg-query exits 1 when it knows some of the packages not at all.
            rc = 0 if len(installed) == len(REQUIRED_PACKAGES) else 1
            return done(rc, "".join(f"{p}\tinstall ok installed\n" for p in installed))
        if cmd[:2] == ["docker", "info"]:
            return done(0 if docker_up else 1)
        if cmd[:2] == ["docker", "run"]:
            return done(0, "3.11\n")
        if cmd[0].startswith("/etc/init.d/") or cmd[0] == "systemctl":
            return done(3)  # not running, not enabled
        return done(0)

    return run


@pytest.fixture
def unprivileged(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A Debian machine without systemd, where we are not root."""
    monkeypatch.setattr(install, "_has_apt", lambda: True)
    monkeypatch.setattr(install, "_is_root", lambda: False)
    monkeypatch.setattr(install, "_systemd_running", lambda: False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    return monkeypatch


def test_run_setup_not_root_with_missing_packages(unprivileged: pytest.MonkeyPatch) -> None:
    unprivileged.setattr(install, "_run", fake_run(REQUIRED_PACKAGES[:2]))
    lines: list[str] = []
    assert run_setup(log=lines.append) == 1
    assert "sudo apt-get install -y docker-registry debootstrap" in lines[0]
    assert "allinone setup" in lines[-1]


def test_run_setup_not_root_docker_down(unprivileged: pytest.MonkeyPatch) -> None:
    unprivileged.setattr(install, "_run", fake_run(docker_up=False))
    lines: list[str] = []
    assert run_setup(log=lines.append) == 1
    assert lines[0].startswith("packages: already installed")
    assert any("Docker engine: does not answer" in line and "dockerd" in line
               for line in lines)


def test_run_setup_turns_os_errors_into_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(log: Any) -> None:
        raise PermissionError(13, "Permission denied", "/var/log/allinone-apt.log")

    monkeypatch.setattr(install, "step_packages", boom)
    lines: list[str] = []
    assert run_setup(log=lines.append) == 1
    assert "Permission denied" in lines[0]


def test_run_setup_all_present_needs_no_root(unprivileged: pytest.MonkeyPatch) -> None:
    unprivileged.setattr(install, "_run", fake_run())
    lines: list[str] = []
    assert run_setup(log=lines.append) == 0
    assert [line.split(": ")[0] for line in lines] == [
        "packages", "packaged services", "Docker engine", f"base image {DEFAULT_BASE_IMAGE}",
        "setup",
    ]
    assert "already present (Python 3.11)" in lines[3]


@pytest.fixture
def fake_dockerd(
    unprivileged: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[pytest.MonkeyPatch, Path]:
    """Root on a machine without systemd whose dockerd is a script in tmp_path; the
    pid file and log live in tmp_path too."""
    unprivileged.setattr(install, "_is_root", lambda: True)
    unprivileged.setattr(install, "DOCKER_PIDFILE", tmp_path / "docker.pid")
    unprivileged.setattr(install, "DOCKERD_LOG", tmp_path / "dockerd.log")
    unprivileged.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    # The start loop's pause between asking Docker: no real wait in a unit test.
    unprivileged.setattr(install.time, "sleep", lambda seconds: None)
    return unprivileged, tmp_path


def write_dockerd(directory: Path, body: str) -> None:
    script = directory / "dockerd"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)


def test_step_docker_starts_dockerd_and_removes_a_stale_pidfile(
    fake_dockerd: tuple[pytest.MonkeyPatch, Path],
) -> None:
    monkeypatch, tmp = fake_dockerd
    mark = tmp / "started"
    # Written whole, then renamed: `mark.exists()` (the engine "answers") must imply its
    # pid is there, or the clean-up reads an empty file (seen once in CI).
    write_dockerd(tmp, f"echo $$ > {mark}.tmp && mv {mark}.tmp {mark}\nexec sleep 30\n")
    (tmp / "docker.pid").write_text("999999999\n")  # no such process
    monkeypatch.setattr(install, "_docker_answers", lambda timeout=10.0: mark.exists())
    lines: list[str] = []
    try:
        install.step_docker(lines.append)
    finally:
        if mark.exists():
            os.kill(int(mark.read_text()), signal.SIGTERM)
    assert not (tmp / "docker.pid").exists()
    assert lines[0].startswith("Docker engine: started dockerd (pid ")


def test_step_docker_reports_a_dockerd_that_dies(
    fake_dockerd: tuple[pytest.MonkeyPatch, Path],
) -> None:
    monkeypatch, tmp = fake_dockerd
    write_dockerd(tmp, "echo 'failed to start daemon: no iptables' >&2\nexit 1\n")
    monkeypatch.setattr(install, "_docker_answers", lambda timeout=10.0: False)
    with pytest.raises(install.SetupError, match=r"exited with code 1: .*no iptables"):
        install.step_docker(lambda line: None)


def test_step_docker_waits_for_a_dockerd_still_starting(
    fake_dockerd: tuple[pytest.MonkeyPatch, Path],
) -> None:
    monkeypatch, tmp = fake_dockerd
    write_dockerd(tmp, "exit 99\n")  # must not be run
    (tmp / "docker.pid").write_text(f"{os.getpid()}\n")  # a live process
    answers = iter([False, False, True])
    monkeypatch.setattr(install, "_docker_answers", lambda timeout=10.0: next(answers))
    lines: list[str] = []
    install.step_docker(lines.append)
    assert "was starting" in lines[0]
