"""A hostile function, run as a real pod, tries to reach the platform and other pods.

Every attempt must fail: etcd, the API and the registry on their loopback ports, the
other pod's socket (by its host path and by guessing in its own mount), taking a
host port, writing to ``/``, the Docker socket. Its uid is not 0 and its effective
capability set is empty. The same holds with ``network: egress``.

Binding port 81 *inside* the pod succeeds (Docker lets a container bind low ports of
its own network namespace), and must stay there: the host's port 81 stays closed.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from allinone.testing import FIXTURES, ServerProcess

pytestmark = pytest.mark.integration

HOSTILE = '''
import os
import socket


def attempt(fn):
    try:
        fn()
    except Exception as exc:
        return f"blocked: {type(exc).__name__}: {exc}"
    return "SUCCEEDED"


def tcp(port):
    def go():
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            s.recv(10)
    return go


def unix(path):
    def go():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(path)
        s.close()
    return go


KEEP = []


def listen(port):
    def go():
        s = socket.socket()
        s.bind(("0.0.0.0", port))
        s.listen()
        KEEP.append(s)  # held open while the host checks its own port
    return go


def write(path):
    def go():
        with open(path, "w") as f:
            f.write("pwned")
    return go


def read(path):
    def go():
        with open(path, "rb") as f:
            f.read(1)
    return go


def run(ports, victim_socket):
    status = open("/proc/self/status").read()
    cap_eff = [l.split()[1] for l in status.splitlines() if l.startswith("CapEff:")][0]
    own = sorted(os.listdir("/run/allinone"))
    return {
        "uid": os.getuid(), "gid": os.getgid(), "cap_eff": cap_eff, "own_dir": own,
        "tcp": {name: attempt(tcp(p)) for name, p in ports.items()},
        "victim_by_host_path": attempt(unix(victim_socket)),
        "victim_by_name": attempt(unix("/run/allinone/../" + victim_socket.split("/")[-2]
                                       + "/http.sock")),
        "listen_81_in_own_netns": attempt(listen(81)),
        "write_root": attempt(write("/pwned")),
        "write_usr": attempt(write("/usr/local/lib/pwned")),
        "docker_sock": attempt(read("/var/run/docker.sock")),
        "write_tmp": attempt(write("/tmp/ok")),
    }
'''


def check(srv: ServerProcess, name: str, victim_socket: str) -> None:
    ports = {"etcd": srv.etcd_port, "api": srv.port, "registry": srv.registry_port}
    r = srv.invoke(name, {"ports": ports, "victim_socket": victim_socket})
    assert r.status_code == 200, r.text
    out = r.json()
    print(f"\n{name}: {out}")
    assert out["uid"] != 0 and out["gid"] != 0
    assert int(out["cap_eff"], 16) == 0
    assert out["own_dir"] == ["http.sock"]  # its own socket, nothing else
    for what, result in out["tcp"].items():
        assert result.startswith("blocked"), (what, result)
    for key in ("victim_by_host_path", "victim_by_name", "write_root", "write_usr",
                "docker_sock"):
        assert out[key].startswith("blocked"), (key, out[key])
    if out["listen_81_in_own_netns"] == "SUCCEEDED":  # its own namespace's port 81...
        with pytest.raises(OSError):  # ...is not the host's
            socket.create_connection(("127.0.0.1", 81), timeout=2).close()
    assert out["write_tmp"] == "SUCCEEDED"  # the tmpfs is the one writable place


def test_hostile_function_reaches_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):  # nothing on the host's port 81 to begin with
        socket.create_connection(("127.0.0.1", 81), timeout=2).close()
    srv = ServerProcess(tmp_path / "state")
    srv.start()
    src = tmp_path / "hostile.py"
    src.write_text(HOSTILE)
    try:
        assert srv.deploy("victim", FIXTURES / "add.py").status_code == 201
        assert srv.invoke("victim", {"x": 1, "y": 2}).json() == 3
        (victim,) = srv.pods("victim")
        victim_socket = victim["status"]["socket"]
        # The platform's side of the socket: private to the pod and the server.
        pod_dir = Path(victim_socket).parent
        assert stat.S_IMODE(os.stat(pod_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(pod_dir.parent).st_mode) == 0o700

        assert srv.deploy("hostile", src).status_code == 201
        check(srv, "hostile", victim_socket)

        assert srv.deploy("hostile-egress", src, spec={"network": "egress"}).status_code == 201
        check(srv, "hostile-egress", victim_socket)
        (c,) = srv.containers("hostile-egress")
        assert c.attrs["HostConfig"]["NetworkMode"] == "bridge"
        (c,) = srv.containers("hostile")
        hc = c.attrs["HostConfig"]
        assert hc["NetworkMode"] == "none" and hc["ReadonlyRootfs"] is True
        assert hc["CapDrop"] == ["ALL"] and "no-new-privileges" in hc["SecurityOpt"]
        assert hc["LogConfig"]["Config"]["max-size"]

        # The victim still works, and its logs are readable.
        assert srv.invoke("victim", {"x": 2, "y": 2}).json() == 4
        bad = srv.deploy("bad-net", src, spec={"network": "host"}, wait=False)
        assert bad.status_code == 400 and "spec.network" in bad.json()["error"]["message"]
    finally:
        srv.stop()
        srv.cleanup_containers()
