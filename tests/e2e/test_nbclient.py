"""A notebook with a ``%%rlm`` cell executes under nbclient (CI, papermill) on the ``rlm`` kernel."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient


def test_nbclient_executes_an_rlm_notebook(tmp_path, needle_haystack) -> None:
    ctx = tmp_path / "haystack.txt"
    ctx.write_text(needle_haystack.text, encoding="utf-8")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"%rlm load {ctx}"),
        nbformat.v4.new_code_cell(f"%%rlm --max-steps 8\n{needle_haystack.query}"),
        nbformat.v4.new_code_cell("SHOW_VARS()"),
    ]
    received: list[dict] = []

    def on_comm(msg: dict) -> None:  # nbclient plays a (non-mirroring) cells client
        received.append(msg["content"]["data"])

    client = NotebookClient(nb, kernel_name="rlm", timeout=120, resources={"metadata": {"path": str(tmp_path)}})
    client.comm_open_handlers["rlm.cells"] = on_comm
    client.execute()
    out = nb.cells[1].outputs
    text = " ".join(str(o.get("data", {}).get("text/plain", "")) for o in out)
    assert needle_haystack.value in text and "FINAL" in text
    assert any("**Step 1**" in str(o.get("data", {}).get("text/markdown", "")) for o in out)
    assert received and received[0]["type"] == "hello"
    assert "str" in "".join(o.get("text", "") for o in nb.cells[2].outputs)
