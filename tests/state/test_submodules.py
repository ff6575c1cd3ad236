"""relive's indexed search for the submodules a function uses gives cloudpickle's answer."""

from __future__ import annotations

import sys
import types

import cloudpickle

from relive.state import submodules


def _functions() -> list[types.FunctionType]:
    import email.mime.text  # noqa: F401  (submodules to find)
    import json.decoder  # noqa: F401
    import xml.etree.ElementTree  # noqa: F401
    import email
    import json
    import xml

    def reads_etree() -> object:
        return xml.etree.ElementTree.fromstring

    def reads_decoder() -> object:
        return json.decoder.JSONDecoder

    def reads_two() -> object:
        return email.mime.text, json.dumps

    def reads_none() -> object:
        return xml

    return [reads_etree, reads_decoder, reads_two, reads_none]


def test_the_answer_is_cloudpickles_in_its_order() -> None:
    original = cloudpickle.cloudpickle._find_imported_submodules.__wrapped__
    functions = _functions()
    packages = [sys.modules[name] for name in ("xml", "json", "email", "os", "email.mime")]
    for func in functions:
        ours = submodules.find(func.__code__, packages)
        assert ours == original(func.__code__, packages), func.__name__
    found = submodules.find(functions[0].__code__, packages)
    assert sys.modules["xml.etree"] in found and sys.modules["xml.etree.ElementTree"] in found


def test_a_module_imported_since_is_found() -> None:
    import xml.dom  # noqa: F401

    def reads_minidom() -> object:
        return xml.dom.minidom  # type: ignore[attr-defined]

    packages = [sys.modules["xml"]]
    before = submodules.find(reads_minidom.__code__, packages)
    assert sys.modules.get("xml.dom.minidom") is None or sys.modules["xml.dom.minidom"] in before
    import xml.dom.minidom  # noqa: F401
    after = submodules.find(reads_minidom.__code__, packages)
    assert sys.modules["xml.dom.minidom"] in after
    assert after == cloudpickle.cloudpickle._find_imported_submodules.__wrapped__(reads_minidom.__code__, packages)


def test_only_relives_pickling_uses_it() -> None:
    calls = []
    real_find = submodules.find
    submodules.find = lambda code, deps: calls.append(code) or real_find(code, deps)  # type: ignore[assignment]
    try:
        func = _functions()[0]
        cloudpickle.dumps(func)  # the program's own use: cloudpickle's code
        assert calls == []
        with submodules.searching():
            cloudpickle.dumps(func)
        assert calls, "relive's pickling goes through the index"
    finally:
        submodules.find = real_find  # type: ignore[assignment]
