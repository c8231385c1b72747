"""Bad input gets its status code and a message naming the problem, and leaves nothing
behind: no Function, no ReplicaSet, no image tag, no container (issue 2)."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from allinone.testing import FIXTURES, ServerProcess

pytestmark = pytest.mark.integration


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


ADD = (FIXTURES / "add.py").read_bytes()

CASES = [
    # (id, name, filename, data, spec, status, error code, words the message must contain;
    # never words the request itself already holds, like the file's name or extension)
    ("bad name", "Bad_Name", "f.py", ADD, None, 400, "BadRequest", ["DNS-1123"]),
    ("long name", "a" * 64, "f.py", ADD, None, 400, "BadRequest", ["64 characters", "63"]),
    ("wrong extension", "ext", "f.txt", ADD, None, 400, "BadSource",
     ["is neither a .py file nor a .zip"]),
    ("syntax error", "syntax", "f.py", b"def run(:\n  pass\n", None, 400, "BadSource",
     ["f.py line 1: "]),
    ("no handler", "nohandler", "f.py", b"def other():\n  return 1\n", None, 400, "BadSource",
     ["does not define 'run' at top level", "top-level functions in it: other"]),
    ("zip slip", "slip", "f.zip", make_zip({"../evil.py": b"x=1", "func.py": ADD}), None, 400,
     "BadSource", ["would be written outside the function directory"]),
    ("absolute path", "abs", "f.zip", make_zip({"/etc/evil.py": b"x=1", "func.py": ADD}), None,
     400, "BadSource", ["has an absolute path"]),
    ("zip without func.py", "nofunc", "f.zip", make_zip({"other.py": ADD}), None, 400,
     "BadSource", ["needs func.py at the root of the zip", "Python files in the zip: other.py"]),
    ("not a zip", "notzip", "f.zip", b"PK but not really", None, 400, "BadSource",
     ["is not a valid zip archive", "re-create it"]),
    ("empty file", "empty", "f.py", b"", None, 400, "BadSource", ["is empty"]),
    ("unknown spec field", "specfield", "f.py", ADD, {"maxscale": 3}, 400, "BadRequest",
     ["maxscale"]),
    ("bad scaling value", "specval", "f.py", ADD, {"scaling": {"maxScale": -1}}, 400,
     "BadRequest", ["scaling.maxScale"]),
    ("min over max", "minmax", "f.py", ADD, {"scaling": {"minScale": 5, "maxScale": 2}}, 400,
     "BadRequest", ["minScale"]),
]


@pytest.mark.parametrize(("name", "filename", "data", "spec", "status", "code", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_and_leaves_nothing(
    server: ServerProcess, name: str, filename: str, data: bytes, spec: object, status: int,
    code: str, words: list[str],
) -> None:
    form = {"name": name}
    if spec is not None:
        form["spec"] = json.dumps(spec)
    r = server.http.post(server.url + "/api/v1/functions", data=form,
                         files={"source": (filename, data)})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    for word in words:
        assert word in err["message"], err["message"]
    assert "Traceback" not in r.text
    assert server.http.get(server.url + f"/api/v1/functions/{name}").status_code == 404
    assert server.http.get(
        server.url + f"/api/v1/namespaces/serverless/replicasets/{name}").status_code == 404
    assert server.registry_tags(name) == []
    assert server.containers(name, all=True) == []


def test_missing_source_and_bad_spec_json(server: ServerProcess) -> None:
    r = server.http.post(server.url + "/api/v1/functions", data={"name": "nosource"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadSource"
    assert "multipart file field named 'source'" in r.json()["error"]["message"]
    r = server.http.post(server.url + "/api/v1/functions", data={"name": "x", "spec": "{"},
                         files={"source": ("f.py", ADD)})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadSpec"
    assert "spec is not valid JSON" in r.json()["error"]["message"]


def test_too_large_upload_is_413(server: ServerProcess) -> None:
    big = b"# " + b"x" * (51 * 1024 * 1024) + b"\ndef run():\n  return 1\n"
    r = server.http.post(server.url + "/api/v1/functions", data={"name": "big"},
                         files={"source": ("f.py", big)})
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["code"] == "TooLarge"
    assert server.http.get(server.url + "/api/v1/functions/big").status_code == 404


def test_duplicate_is_409_and_keeps_the_original(server: ServerProcess) -> None:
    assert server.deploy("dup", FIXTURES / "add.py").status_code == 201
    r = server.deploy("dup", FIXTURES / "sleep.py", wait=False)
    assert r.status_code == 409 and "exists" in r.json()["error"]["message"]
    assert server.get("dup")["spec"]["source"]["filename"] == "add.py"


def test_failed_requirement_marks_the_function_failed(server: ServerProcess) -> None:
    data = make_zip({"func.py": ADD, "requirements.txt": b"no-such-package-allinone-xyz==1.0\n"})
    r = server.http.post(server.url + "/api/v1/functions", data={"name": "badreq"},
                         files={"source": ("f.zip", data)})
    assert r.status_code == 201
    fn = server.wait_phase("badreq", "Failed")
    assert "no-such-package-allinone-xyz" in fn["status"]["message"]
    r = server.invoke("badreq", {})
    assert r.status_code == 503 and "failed to build" in r.json()["error"]["message"]
    assert server.containers("badreq", all=True) == []


def test_unknown_route_and_method_have_the_error_body(server: ServerProcess) -> None:
    r = server.http.get(server.url + "/api/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NotFound"
    r = server.http.put(server.url + "/api/v1/functions/missing", data={"spec": "{}"})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "NotFound"
    assert "no function named 'missing'" in r.json()["error"]["message"]
