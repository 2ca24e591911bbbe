"""Provider faults and bad human input through a real kernel: exact answers under 30% faults, a
clear stop when the provider stays down, and a clear message for every bad input."""

from __future__ import annotations

from support import scripted_env

from rlm_kernel.scripted import FaultPlan

QUERY = "How many log lines have level ERROR? [chunks=12]"



def _load(k, tmp_path, text: str) -> None:
    p = tmp_path / "log.txt"
    p.write_text(text)
    assert k.run(f"%rlm load {p}").reply["status"] == "ok"


def test_thirty_percent_faults_still_give_the_exact_answer(kernel_factory, scripted_server,
                                                          tmp_path, log_context) -> None:
    srv = scripted_server(faults=FaultPlan(rate=0.3, kinds=(429, 500, 503, "timeout"), hang_s=3.0,
                                           seed=5))
    k = kernel_factory(scripted_env(srv.base_url))
    k.open_comm()
    _load(k, tmp_path, log_context.text)
    # Generous retries for a 30% fault rate; a 1 s attempt timeout turns hangs into retries.
    k.run("%rlm config max_retries=10 call_timeout=1")
    ran = k.run("%%rlm\n" + QUERY, cell_id="q", timeout=240)
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "final", finish
    assert finish["answer"].strip() == str(log_context.level_error)
    stats = srv.model.stats
    assert sum(stats.faults.values()) > 0, "the faults were really injected"
    ran = k.run("%rlm status")
    assert "HTTP attempts" in ran.outputs_text  # retried attempts are counted apart from usage


def test_a_provider_that_stays_down_stops_the_run_clearly(kernel_factory, scripted_server,
                                                          tmp_path, log_context) -> None:
    srv = scripted_server(faults=FaultPlan(rate=1.0, kinds=(503,), seed=1))
    k = kernel_factory(scripted_env(srv.base_url))
    k.open_comm()
    _load(k, tmp_path, log_context.text)
    k.run("%rlm config max_retries=2")
    ran = k.run("%%rlm\n" + QUERY, cell_id="q", timeout=120)
    assert ran.reply["status"] == "error"
    assert "HTTP 503 after 2 retries" in ran.reply["evalue"], ran.reply["evalue"]
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "error"
    assert srv.model.stats.requests == 3  # bounded: one attempt plus two retries
    assert k.run("print('usable')").outputs_text.strip() == "usable"


def test_context_types_and_bad_input_get_clear_messages(kernel_factory) -> None:
    k = kernel_factory()
    k.open_comm()
    k.run("docs = ['alpha beta', 'One of the special magic numbers for calm-lake is: 1234567.']")
    ran = k.run("%%rlm --context docs\nWhat is the special magic number for calm-lake mentioned "
                "in the provided text?", cell_id="q1")
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "final" and "1234567" in finish["answer"]
    header = next(c for c in k.mirror.cells if c["id"] == "q1")["metadata"]["rlm"]["header"]
    assert header["context"]["type"] == "list" and header["context"]["parts"] == 2

    k.run("table = {'a': 'One of the special magic numbers for calm-lake is: 7654321.'}")
    ran = k.run("%%rlm --context table\nWhat is the special magic number for calm-lake "
                "mentioned in the provided text?", cell_id="q2")
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "final" and "7654321" in finish["answer"]

    k.run("raw = b'One of the special magic numbers for calm-lake is: 1112223.'")
    ran = k.run("%%rlm --context raw\nWhat is the special magic number for calm-lake "
                "mentioned in the provided text?", cell_id="q3")
    finish = [m for m in ran.comm if m["type"] == "finish"][-1]
    assert finish["outcome"] == "final", finish  # bytes are supported: read as the model likes
    assert "1112223" in finish["answer"]

    k.run("empty = ''")
    ran = k.run("%%rlm --context empty\nanything?")
    assert ran.reply["status"] == "error" and "is empty" in ran.reply["evalue"]
    ran = k.run("%%rlm --context nope\nanything?")
    assert ran.reply["status"] == "error" and "'nope' is not set" in ran.reply["evalue"]
    ran = k.run("%rlm config base_url=localhost:8000")
    assert ran.reply["status"] == "error" and "not an http(s) URL" in ran.outputs_text
    ran = k.run("%%rlm --max-steps many\nanything?")
    assert ran.reply["status"] == "error" and "max_steps must be a whole number" in ran.reply["evalue"]


def test_unknown_model_and_unreachable_endpoint(kernel_factory, scripted_server) -> None:
    srv = scripted_server()
    k = kernel_factory(scripted_env(srv.base_url))
    k.run("context = 'some text'")
    ran = k.run("%%rlm --model gpt-imaginary-9\nanything?")
    assert ran.reply["status"] == "error"
    assert "model 'gpt-imaginary-9' was not found" in ran.reply["evalue"]
    assert "RLM_MODEL" in ran.reply["evalue"]
    ran = k.run("%rlm config base_url=http://127.0.0.1:9/v1 max_retries=1")
    assert ran.reply["status"] == "ok"
    ran = k.run("%%rlm\nanything?")
    assert ran.reply["status"] == "error"
    assert "could not connect to http://127.0.0.1:9/v1" in ran.reply["evalue"]
