"""docs/api.md's snippets run, in order, as one script: the library tour stays true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import onepixel

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_public_api_names_load():
    assert "__version__" in onepixel.__all__
    for name in onepixel.__all__:
        assert getattr(onepixel, name) is not None, name
    with pytest.raises(AttributeError):
        onepixel.no_such_name  # noqa: B018


@pytest.mark.slow
def test_api_page_snippets_run(tmp_path, monkeypatch, max_model_path, true_png, false_png, capsys):
    snippets = _snippets()
    assert len(snippets) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "api_docs"}
    for i, code in enumerate(snippets):
        try:
            exec(compile(code, f"{DOC.name} snippet {i + 1}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"docs/api.md snippet {i + 1} failed: {type(exc).__name__}: {exc}\n{code}")
    out = capsys.readouterr().out
    assert "true.png scores 0.9884" in out
    assert (tmp_path / "run" / "report.html").is_file()
    assert "lowest score" in out and "True" in out
