"""One bad object never stops a loop: shape checks, the informer's error boundary,
lenient decoding of lists and watches, and zip validation that streams data files."""

from __future__ import annotations

import io
import zipfile

import pytest

from allinone import objects
from allinone.builder.validate import MAX_CODE_FILE, TooLarge, validate_source
from allinone.informer import Informer
from allinone.store import Obj
from allinone.store.memory import MemoryStore, decode_listed


def good_function(name: str) -> Obj:
    fn = objects.new_object("Function", name, objects.normalize_spec(None))
    fn["spec"]["source"] = {"filename": "f.py", "sha256": "0" * 64, "size": 1}
    fn["status"] = {"phase": "Building"}
    return fn


@pytest.mark.parametrize(("obj", "reason"), [
    ({"metadata": {"name": "x", "generation": 1}}, "spec is missing"),
    ({"metadata": {"name": "x", "generation": 1}, "spec": {}, "status": {}},
     "spec.source.sha256 is missing"),
    ({"metadata": {"name": "x", "generation": "1"}, "spec": {}}, "metadata.generation is str"),
    ({"metadata": {"name": "x", "generation": True}, "spec": {}}, "metadata.generation is bool"),
])
def test_check_function_says_what_is_wrong(obj: Obj, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        objects.check_function(obj)


def test_check_function_accepts_a_real_function() -> None:
    objects.check_function(good_function("ok"))


def test_decode_listed_never_raises_and_names_the_object() -> None:
    obj = decode_listed(b"not json", 7, "/allinone/functions/junk")
    assert obj["metadata"] == {"name": "junk", "resourceVersion": "7"} and "malformed" in obj
    obj = decode_listed(b'{"spec": {}}', 8, "/allinone/functions/anon")
    assert obj["metadata"]["name"] == "anon"


async def test_informer_keeps_malformed_objects_out_and_handlers_apart(
        caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    await store.create(objects.function_key("good"), good_function("good"))
    await store.create(objects.function_key("bad"), {"metadata": {"name": "bad"}})
    informer = Informer(store, objects.FUNCTIONS_PREFIX, objects.check_function)
    seen: list[str] = []

    def broken_handler(key: str, old: Obj | None, new: Obj | None) -> None:
        raise KeyError("spec")

    informer.add_handler(broken_handler)
    informer.add_handler(lambda key, old, new: seen.append(key))
    await informer._relist()
    await informer._relist()  # a second relist logs nothing new
    assert [f["metadata"]["name"] for f in informer.items()] == ["good"]
    assert "is missing" in informer.invalid[objects.function_key("bad")]
    assert seen == [objects.function_key("good")]  # the broken handler did not stop it
    assert sum("is malformed" in r.getMessage() for r in caplog.records) == 1
    # Fixed in place: it enters the cache and the invalid mark goes.
    bad = await store.get(objects.function_key("bad"))
    fixed = good_function("bad")
    fixed["metadata"]["resourceVersion"] = bad["metadata"]["resourceVersion"]
    await store.update(objects.function_key("bad"), fixed)
    await informer._relist()
    assert informer.get("bad") is not None and not informer.invalid
    await store.close()


def zip_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_data_files_are_streamed_not_kept() -> None:
    data = zip_of({"func.py": b"def run():\n    return 1\n", "data.bin": b"\0" * 5_000_000})
    src = validate_source("f.zip", data, "run", max_upload=10**7, max_unzipped=10**8)
    assert set(src.files) == {"func.py", "data.bin"}
    assert src.files.size("data.bin") == 5_000_000
    assert src.files._kept.keys() == {"func.py"}  # only code is held
    with src.files.open("data.bin") as f:
        assert f.read(10) == b"\0" * 10
    assert src.files["data.bin"] == b"\0" * 5_000_000


def test_a_python_module_past_the_code_limit_is_too_large() -> None:
    big = b"x = 1\n" * (MAX_CODE_FILE // 6 + 2)
    data = zip_of({"func.py": b"def run():\n    return 1\n", "gen.py": big})
    with pytest.raises(TooLarge, match=r"gen\.py"):
        validate_source("f.zip", data, "run", max_upload=10**8, max_unzipped=10**9)
