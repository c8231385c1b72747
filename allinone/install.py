"""``allinone setup``: make this machine able to run ``allinone serve``, idempotently.

``allinone serve`` needs four things that a Python package cannot carry: the Docker
engine (``docker.io``), the etcd and registry binaries it runs as child processes
(``etcd-server``, ``docker-registry``), and a base image with Python for function
images. :func:`run_setup` brings them about in this order:

1. packages: install only the missing ones of :data:`REQUIRED_PACKAGES` with apt;
2. packaged services: Debian's packages start their own etcd (port 2379) and registry
   (port 5000) where an init system runs them; ``allinone serve`` wants those ports for
   its embedded ones, so active units are stopped and disabled;
3. Docker engine: started (``systemctl start docker``, or ``dockerd`` detached) when
   ``docker info`` does not answer;
4. base image: kept if present, else pulled (``python:3.11-slim``) and tagged, else
   built offline from Debian packages with debootstrap and ``docker import``; then
   verified to run ``python3``.

Invariants:

- Every step looks before it acts and logs exactly one line of what it found or did, so
  a second run changes nothing, says "already ..." and takes well under a second or two.
- A step that cannot be done here (not root, not Debian/apt, Docker Hub unreachable and
  no debootstrap) logs what the user must run and makes :func:`run_setup` return 1.
  No traceback reaches the user: expected failures are :class:`SetupError`, and
  ``OSError``/``SubprocessError`` from the commands are turned into one line too.
- Root is needed only for what changes the system: a machine where everything is in
  place passes without root.
- The decisions are pure functions (``parse_*``, ``missing_packages``, ``*_message``,
  ``*_command``) so they are unit-tested without root, apt or Docker; :func:`run_setup`
  only sequences them around ``subprocess`` calls. This is a one-shot CLI step, so
  synchronous subprocess calls are the simple and right tool.
- The only promise about the base image is that ``python3`` on its ``PATH`` is Python
  >= 3.11: the pulled image has it in ``/usr/local/bin``, the debootstrapped one in
  ``/usr/bin``, so nothing may call it by absolute path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from allinone.config import DEFAULT_BASE_IMAGE, PULLABLE_BASE_IMAGE

Log = Callable[[str], None]

# graphviz: `allinone workflow graph` lays out state machines with its `dot`.
# chromium: the dashboard's browser tests (tests/ui) drive Debian's build through
# Playwright, so no browser is downloaded.
REQUIRED_PACKAGES: tuple[str, ...] = ("docker.io", "etcd-server", "docker-registry", "debootstrap",
                                      "graphviz", "chromium")

# The commands each package provides; on a machine without apt these are what we look
# for on PATH instead (the registry is called ``registry`` upstream).
PACKAGE_COMMANDS: dict[str, tuple[str, ...]] = {
    "docker.io": ("docker", "dockerd"),
    "etcd-server": ("etcd",),
    "docker-registry": ("docker-registry|registry",),
    "debootstrap": ("debootstrap",),
    "graphviz": ("dot",),
    "chromium": ("chromium|chromium-browser",),
}

# Services that Debian's packages start on install, and the port each would hold that
# ``allinone serve`` wants for its own embedded copy.
PACKAGED_SERVICES: dict[str, int] = {"docker-registry": 5000, "etcd": 2379}

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "a"}
DEFAULT_DOCKER_SOCKET = "unix:///var/run/docker.sock"
DOCKER_PIDFILE = Path("/var/run/docker.pid")
DOCKERD_LOG = Path("/var/log/allinone-dockerd.log")
APT_LOG = Path("/var/log/allinone-apt.log")
DOCKER_START_TIMEOUT = 60.0
PULL_TIMEOUT = 60.0
DEBOOTSTRAP_SUITE = "bookworm"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
MIN_PYTHON = (3, 11)

# ``docker import`` makes an image with no config at all; give it what a Python image
# is expected to have (python:3.11-slim sets the same PATH and LANG).
IMPORT_CHANGES: tuple[str, ...] = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)

# Prints the major.minor of the image's python3; used to verify the base image.
PYTHON_VERSION_PROBE = "import sys; print('%d.%d' % sys.version_info[:2])"


class SetupError(Exception):
    """A step failed or cannot be done here; the message says what the user should do."""


# --------------------------------------------------------------------------- pure helpers


def is_installed_status(status: str) -> bool:
    """True for a dpkg ``${Status}`` that means installed (``install ok installed``,
    also ``hold ok installed``); False for removed-with-config, half-installed, or ''."""
    words = status.split()
    return len(words) == 3 and words[1] == "ok" and words[2] == "installed"


def parse_dpkg_query(text: str) -> dict[str, str]:
    """Parse ``dpkg-query -W -f='${Package}\\t${Status}\\n' ...`` output into a map.

    A package listed twice (several architectures) counts as installed if any line says
    so. Packages dpkg has never heard of are simply absent (dpkg-query reports them on
    stderr).
    """
    result: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, status = line.partition("\t")
        name, status = name.strip(), status.strip()
        if not sep or not name:
            continue
        if name in result and is_installed_status(result[name]):
            continue
        result[name] = status
    return result


def missing_packages(
    status: Mapping[str, str], required: Iterable[str] = REQUIRED_PACKAGES
) -> list[str]:
    """The required packages that ``status`` (from :func:`parse_dpkg_query`) does not
    show as installed, in the order of ``required``."""
    return [pkg for pkg in required if not is_installed_status(status.get(pkg, ""))]


def apt_install_command(packages: Sequence[str]) -> list[str]:
    """Non-interactive install that keeps existing config files without asking (CI has
    no stdin, and a conffile prompt would hang it). Recommends stay on: docker.io's
    bring ca-certificates (for ``docker pull``) and cgroupfs-mount (dockerd without
    systemd)."""
    return [
        "apt-get", "install", "-y", "-q",
        "-o", "Dpkg::Options::=--force-confdef",
        "-o", "Dpkg::Options::=--force-confold",
        *packages,
    ]


def apt_hint(packages: Sequence[str]) -> str:
    return f"sudo apt-get update && sudo apt-get install -y {' '.join(packages)}"


def not_root_message(packages: Sequence[str]) -> str:
    """What to print when packages are missing and we are not root."""
    return (
        f"packages: missing {', '.join(packages)} and installing them needs root: run "
        f"`sudo allinone setup`, or install them yourself with `{apt_hint(packages)}` "
        "and run `allinone setup` again"
    )


def missing_commands(which: Callable[[str], str | None]) -> list[str]:
    """On a machine without apt: the commands of :data:`PACKAGE_COMMANDS` (but
    debootstrap, only needed when no base image can be pulled) not found by ``which``.
    ``a|b`` means either will do."""
    missing = []
    for pkg, commands in PACKAGE_COMMANDS.items():
        if pkg in ("debootstrap", "chromium"):  # only for the base image / the UI tests
            continue
        for alternatives in commands:
            if not any(which(cmd) for cmd in alternatives.split("|")):
                missing.append(alternatives.split("|")[0])
    return missing


def no_apt_message(commands: Sequence[str]) -> str:
    return (
        f"packages: this is not a Debian/apt machine and {', '.join(commands)} "
        "cannot be found on PATH: install the Docker engine, etcd (v3) and the "
        "distribution registry (`registry` or `docker-registry`) with your system's "
        "package manager, start the Docker engine, and run `allinone setup` again"
    )


def docker_start_hint(systemd: bool) -> str:
    if systemd:
        return "`sudo systemctl start docker`"
    return f"`sudo sh -c 'dockerd >{DOCKERD_LOG} 2>&1 &'`"


def docker_not_answering_message(docker_host: str | None, *, is_root: bool, systemd: bool) -> str:
    """Why we cannot start the engine ourselves, and what the user should do."""
    if docker_host and docker_host != DEFAULT_DOCKER_SOCKET:
        return (
            f"Docker engine: does not answer at DOCKER_HOST={docker_host}: start that "
            "engine, or unset DOCKER_HOST to use the local one, and run `allinone setup` again"
        )
    if not is_root:
        return (
            f"Docker engine: does not answer at {DEFAULT_DOCKER_SOCKET} and starting it "
            f"needs root: run `sudo allinone setup`, or start it with "
            f"{docker_start_hint(systemd)} (and make sure your user may use the socket: "
            "`sudo usermod -aG docker $USER`, then log in again)"
        )
    return f"Docker engine: does not answer: start it with {docker_start_hint(systemd)}"


def is_stale_pidfile(pid_text: str, alive: Callable[[int], bool]) -> bool:
    """A pid file whose process is gone makes a new dockerd refuse to start; it is
    stale when it holds no number or the number of a process that is not ``alive``."""
    try:
        pid = int(pid_text.strip())
    except ValueError:
        return True
    return pid <= 0 or not alive(pid)


def service_needs_quieting(active: bool, enabled: bool) -> bool:
    """A packaged etcd or registry must be stopped when it runs now and disabled when it
    would run at the next boot; either way ``allinone serve`` would find its port taken."""
    return active or enabled


def pull_candidates(base_image: str) -> list[str]:
    """Images to try ``docker pull`` on, in order. Our own default name exists on no
    public registry, so it is never pulled; any other name the user chose is tried
    first, then :data:`PULLABLE_BASE_IMAGE`."""
    candidates = [] if base_image == DEFAULT_BASE_IMAGE else [base_image]
    if PULLABLE_BASE_IMAGE not in candidates:
        candidates.append(PULLABLE_BASE_IMAGE)
    return candidates


def parse_apt_mirror(text: str, suite: str = DEBOOTSTRAP_SUITE) -> str | None:
    """The Debian mirror that apt already uses for ``suite``, from one-line
    (``deb URL bookworm main``) or deb822 (``URIs:``/``Suites:``) sources text.

    debootstrap does not read apt's sources; reusing the mirror apt uses keeps it
    working on machines that reach Debian only through a local mirror.
    """
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        parts = line.split()
        if len(parts) < 3 or parts[0] != "deb":
            continue
        rest = parts[1:]
        if rest[0].startswith("["):  # options such as [signed-by=...] before the URL
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) >= 2 and rest[1] == suite:
            return rest[0].rstrip("/")
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.lstrip().startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        types = fields.get("types", "").split()
        enabled = fields.get("enabled", "yes").lower() != "no"
        if "deb" in types and enabled and suite in fields.get("suites", "").split():
            uris = fields.get("uris", "").split()
            if uris:
                return uris[0].rstrip("/")
    return None


def debootstrap_command(target: Path, mirror: str) -> list[str]:
    return [
        "debootstrap", "--variant=minbase", "--include=python3",
        DEBOOTSTRAP_SUITE, str(target), mirror,
    ]


def verify_command(image: str) -> list[str]:
    """Runs the image's ``python3`` through its own PATH (see the module invariants)."""
    return ["docker", "run", "--rm", "--network", "none", image, "python3", "-c",
            PYTHON_VERSION_PROBE]


def python_version_ok(output: str) -> bool:
    try:
        major, minor = (int(x) for x in output.strip().split("."))
    except ValueError:
        return False
    return (major, minor) >= MIN_PYTHON


def tail(text: str, lines: int = 5) -> str:
    """The last lines of a command's output, joined to one line for a log message."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "(no output)"


# ------------------------------------------------------------------------ system probes


def _run(cmd: Sequence[str], *, timeout: float = 30.0, env: Mapping[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; a missing program is exit code 127 and a
    timeout is exit code 124 (as in the shell), so callers only ever look at codes."""
    try:
        return subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
        )
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(list(cmd), 127, "", str(exc))
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return subprocess.CompletedProcess(list(cmd), 124, out, f"timed out after {timeout:.0f} s")


def _is_root() -> bool:
    return os.geteuid() == 0


def _has_apt() -> bool:
    return shutil.which("apt-get") is not None and shutil.which("dpkg-query") is not None


def _systemd_running() -> bool:
    # systemctl is installed on Debian containers too; only this directory says that
    # systemd is the running init (sd_booted()).
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _docker_answers(timeout: float = 10.0) -> bool:
    res = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=timeout)
    return res.returncode == 0


def _image_exists(image: str) -> bool:
    return _run(["docker", "image", "inspect", "--format", "{{.Id}}", image]).returncode == 0


# -------------------------------------------------------------------------------- steps


def step_packages(log: Log) -> None:
    if not _has_apt():
        missing = missing_commands(shutil.which)
        if missing:
            raise SetupError(no_apt_message(missing))
        log("packages: not a Debian/apt machine, but docker, etcd and the registry are on PATH")
        return
    query = _run(["dpkg-query", "-W", "-f=${Package}\t${Status}\n", *REQUIRED_PACKAGES])
    missing = missing_packages(parse_dpkg_query(query.stdout))
    if not missing:
        log(f"packages: already installed ({', '.join(REQUIRED_PACKAGES)})")
        return
    if not _is_root():
        raise SetupError(not_root_message(missing))
    log(f"packages: installing {', '.join(missing)} with apt-get "
        f"(a minute or two; output in {APT_LOG})")
    started = time.monotonic()
    with open(APT_LOG, "a") as out:
        for cmd in (["apt-get", "update", "-q"], apt_install_command(missing)):
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, **APT_ENV}).returncode
            if rc != 0:
                raise SetupError(
                    f"packages: `{' '.join(cmd)}` failed with exit code {rc}: "
                    f"{tail(APT_LOG.read_text(errors='replace'))} (full log: {APT_LOG})"
                )
    again = missing_packages(parse_dpkg_query(
        _run(["dpkg-query", "-W", "-f=${Package}\t${Status}\n", *missing]).stdout), missing)
    if again:
        raise SetupError(f"packages: still not installed after apt-get: {', '.join(again)} "
                         f"(see {APT_LOG})")
    log(f"packages: installed {', '.join(missing)} in {time.monotonic() - started:.0f} s")


def step_packaged_services(log: Log) -> None:
    names = " and ".join(PACKAGED_SERVICES)
    if _systemd_running():
        quieted = []
        for unit, port in PACKAGED_SERVICES.items():
            active = _run(["systemctl", "is-active", "--quiet", unit]).returncode == 0
            enabled = _run(["systemctl", "is-enabled", "--quiet", unit]).returncode == 0
            if not service_needs_quieting(active, enabled):
                continue
            if not _is_root():
                raise SetupError(
                    f"packaged services: {unit} is {'running' if active else 'enabled'} and "
                    f"holds port {port} that `allinone serve` uses: run "
                    f"`sudo systemctl disable --now {unit}`"
                )
            res = _run(["systemctl", "disable", "--now", unit], timeout=60)
            if res.returncode != 0:
                raise SetupError(f"packaged services: `systemctl disable --now {unit}` failed: "
                                 f"{tail(res.stderr)}")
            quieted.append(f"{unit} (port {port})")
        if quieted:
            log(f"packaged services: stopped and disabled {', '.join(quieted)} so "
                "`allinone serve` can run its own")
        else:
            log(f"packaged services: {names} already stopped and disabled")
        return
    # No systemd: a sysv init script may still have started them at install time
    # (unless policy-rc.d forbade it, as in containers).
    stopped = []
    for unit, port in PACKAGED_SERVICES.items():
        script = Path("/etc/init.d") / unit
        if not script.exists() or _run([str(script), "status"]).returncode != 0:
            continue
        if not _is_root():
            raise SetupError(f"packaged services: {unit} is running and holds port {port} that "
                             f"`allinone serve` uses: run `sudo service {unit} stop`")
        res = _run([str(script), "stop"], timeout=60)
        if res.returncode != 0:
            raise SetupError(f"packaged services: `{script} stop` failed: {tail(res.stdout)}")
        _run(["update-rc.d", unit, "disable"])
        stopped.append(f"{unit} (port {port})")
    if stopped:
        log(f"packaged services: stopped {', '.join(stopped)} so `allinone serve` can run its own")
    else:
        log(f"packaged services: {names} not running (no systemd here)")


def step_docker(log: Log) -> None:
    if _docker_answers():
        log("Docker engine: already running")
        return
    docker_host = os.environ.get("DOCKER_HOST")
    systemd = _systemd_running()
    if (docker_host and docker_host != DEFAULT_DOCKER_SOCKET) or not _is_root():
        raise SetupError(docker_not_answering_message(docker_host, is_root=_is_root(),
                                                      systemd=systemd))
    started = time.monotonic()
    proc: subprocess.Popen[bytes] | None = None
    if systemd:
        res = _run(["systemctl", "start", "docker"], timeout=DOCKER_START_TIMEOUT)
        if res.returncode != 0:
            raise SetupError(f"Docker engine: `systemctl start docker` failed: {tail(res.stderr)} "
                             "(see `journalctl -u docker`)")
        how = "started the docker service"
    else:
        if shutil.which("dockerd") is None:
            raise SetupError("Docker engine: dockerd is not installed: run "
                             f"`{apt_hint(['docker.io'])}`")
        pid_text = DOCKER_PIDFILE.read_text(errors="replace") if DOCKER_PIDFILE.exists() else ""
        if pid_text and not is_stale_pidfile(pid_text, _pid_alive):
            # A dockerd is there but not answering yet (still starting): wait for it
            # rather than start a second one, which would refuse because of the pid file.
            how = f"dockerd (pid {pid_text.strip()}) was starting"
        else:
            if pid_text:
                # Left by a dockerd that died with the machine or container; a new one
                # refuses to start while it is there.
                DOCKER_PIDFILE.unlink()
            with open(DOCKERD_LOG, "ab") as out:
                proc = subprocess.Popen(
                    ["dockerd"], stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # outlives this command and ignores its Ctrl-C
                )
            how = f"started dockerd (pid {proc.pid}, log {DOCKERD_LOG})"
    deadline = started + DOCKER_START_TIMEOUT
    while time.monotonic() < deadline:
        if _docker_answers(timeout=5):
            log(f"Docker engine: {how}; answering after {time.monotonic() - started:.1f} s")
            return
        if proc is not None and proc.poll() is not None:
            raise SetupError(
                f"Docker engine: dockerd exited with code {proc.returncode}: "
                f"{tail(DOCKERD_LOG.read_text(errors='replace'))} (full log: {DOCKERD_LOG})"
            )
        time.sleep(0.5)
    where = "`journalctl -u docker`" if systemd else str(DOCKERD_LOG)
    raise SetupError(f"Docker engine: {how} but it did not answer within "
                     f"{DOCKER_START_TIMEOUT:.0f} s: see {where}")


def _verify_image(image: str) -> str:
    """Run the image's python3 and return its version, or raise SetupError."""
    res = _run(verify_command(image), timeout=60)
    version = res.stdout.strip()
    if res.returncode != 0 or not python_version_ok(version):
        raise SetupError(
            f"base image {image}: does not run python3 >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} "
            f"({tail(res.stderr or res.stdout)}): remove it with `docker rmi {image}` and run "
            "`allinone setup` again"
        )
    return version


def _debian_mirror() -> str:
    for source in APT_SOURCES:
        files = sorted(source.glob("*.sources")) + sorted(source.glob("*.list")) \
            if source.is_dir() else [source]
        for path in files:
            try:
                mirror = parse_apt_mirror(path.read_text(errors="replace"))
            except OSError:
                continue
            if mirror:
                return mirror
    return DEFAULT_DEBIAN_MIRROR


def _unmount_below(root: Path) -> None:
    """debootstrap mounts /proc and /sys inside the target and may leave them mounted
    when it fails; remove them before deleting the tree, or rmtree would descend into
    the host's /proc and /sys."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = str(root.resolve()) + "/"
    targets = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        _run(["umount", "-l", target])


def _build_base_image(image: str, log: Log) -> None:
    if not _is_root():
        raise SetupError(
            f"base image {image}: missing, Docker Hub cannot be reached, and building it "
            "with debootstrap needs root: run `sudo allinone setup`, or `docker tag` an "
            f"image with python3 >= 3.11 as {image}"
        )
    if shutil.which("debootstrap") is None:
        raise SetupError(f"base image {image}: debootstrap is missing: run "
                         f"`{apt_hint(['debootstrap'])}` and `allinone setup` again")
    mirror = _debian_mirror()
    log(f"base image {image}: building it with debootstrap from {mirror} "
        f"({DEBOOTSTRAP_SUITE}, minbase + python3; takes about a minute)")
    started = time.monotonic()
    # /var/tmp, not /tmp: /tmp is often a tmpfs mounted nodev or noexec, where
    # debootstrap cannot create device nodes or run the chroot's binaries.
    workdir = Path(tempfile.mkdtemp(prefix="allinone-rootfs-", dir="/var/tmp"))
    rootfs = workdir / "rootfs"
    try:
        res = _run(debootstrap_command(rootfs, mirror), timeout=900)
        if res.returncode != 0:
            raise SetupError(
                f"base image {image}: debootstrap failed with exit code {res.returncode}: "
                f"{tail(res.stdout + res.stderr)} (is {mirror} reachable?)"
            )
        # tar's stderr goes to a file, not a pipe nobody reads while it streams.
        with tempfile.TemporaryFile() as tar_err:
            tar = subprocess.Popen(
                ["tar", "-C", str(rootfs), "--numeric-owner",
                 "--exclude=./var/cache/apt/archives/*.deb", "--exclude=./var/lib/apt/lists/*",
                 "-c", "."],
                stdout=subprocess.PIPE, stderr=tar_err,
            )
            changes = [arg for change in IMPORT_CHANGES for arg in ("--change", change)]
            try:
                imp = subprocess.run(["docker", "import", *changes, "-", image],
                                     stdin=tar.stdout, capture_output=True, text=True,
                                     timeout=600)
            finally:
                if tar.stdout is not None:
                    tar.stdout.close()  # so tar gets SIGPIPE if docker import died early
                tar_rc = tar.wait()
            tar_err.seek(0)
            errors = tar_err.read().decode(errors="replace")
        if tar_rc != 0 or imp.returncode != 0:
            raise SetupError(f"base image {image}: tar | docker import failed: "
                             f"{tail(errors + imp.stderr)}")
    finally:
        _unmount_below(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    version = _verify_image(image)
    log(f"base image {image}: built in {time.monotonic() - started:.0f} s (Python {version})")


def step_base_image(image: str, log: Log) -> None:
    if _image_exists(image):
        version = _verify_image(image)
        log(f"base image {image}: already present (Python {version})")
        return
    for candidate in pull_candidates(image):
        res = _run(["docker", "pull", "-q", candidate], timeout=PULL_TIMEOUT)
        if res.returncode != 0:
            log(f"base image {image}: `docker pull {candidate}` failed ({tail(res.stderr, 1)})")
            continue
        if candidate != image:
            tagged = _run(["docker", "tag", candidate, image])
            if tagged.returncode != 0:
                raise SetupError(f"base image {image}: `docker tag {candidate} {image}` "
                                 f"failed: {tail(tagged.stderr)}")
        version = _verify_image(image)
        log(f"base image {image}: pulled {candidate} (Python {version})")
        return
    _build_base_image(image, log)


def run_setup(base_image: str = DEFAULT_BASE_IMAGE, *, log: Log = print) -> int:
    """Bring this machine to the state ``allinone serve`` needs; 0 when it is there.

    Safe to run any number of times: a machine that is ready is only inspected. On
    failure the last line logged says what to do, and the result is 1.
    """
    started = time.monotonic()
    steps: list[Callable[[], None]] = [
        lambda: step_packages(log),
        lambda: step_packaged_services(log),
        lambda: step_docker(log),
        lambda: step_base_image(base_image, log),
    ]
    try:
        for step in steps:
            step()
    except SetupError as exc:
        log(str(exc))
        log("setup: not finished; fix the above and run `allinone setup` again")
        return 1
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"setup: a command failed: {exc}; fix it and run `allinone setup` again")
        return 1
    log(f"setup: this machine is ready ({time.monotonic() - started:.1f} s); "
        "start the server with `allinone serve`")
    return 0


def main() -> int:
    """``python -m allinone.install``: the same as ``allinone setup``, without the CLI."""
    return run_setup(os.environ.get("ALLINONE_BASE_IMAGE", DEFAULT_BASE_IMAGE))


if __name__ == "__main__":
    sys.exit(main())
