"""The ``rlm`` kernel, and its sandboxed variant, behave like ipykernel for plain Python
(jupyter_kernel_test's conformance)."""

from __future__ import annotations

import unittest

import jupyter_kernel_test
from sandbox_world import UNSUPPORTED


class RLMKernelConformance(jupyter_kernel_test.KernelTests):
    kernel_name = "rlm"
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "for i in range(3):"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise ValueError('boom')"
    code_execute_result = [{"code": "1+2+3", "result": "6"}, {"code": "[n*n for n in range(3)]",
                                                            "result": "[0, 1, 4]"}]
    code_display_data = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
         "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))",
         "mime": "text/latex"},
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    def test_rlm_names_are_in_the_namespace(self) -> None:
        self.flush_channels()
        reply, output_msgs = self.execute_helper(
            code="print(sorted(n for n in ('context', 'llm', 'llm_batch', 'llm_query', "
                 "'llm_query_batched', 'rlm', 'FINAL', 'FINAL_VAR', 'SHOW_VARS') if n in globals()))"
        )
        self.assertEqual(reply["content"]["status"], "ok")
        text = "".join(m["content"].get("text", "") for m in output_msgs)
        self.assertIn("'llm_batch'", text)
        self.assertIn("'FINAL_VAR'", text)
        self.assertIn("'context'", text)

    def test_kernel_info_names_the_implementation(self) -> None:
        self.flush_channels()
        msg_id = self.kc.kernel_info()
        reply = self.kc.get_shell_msg(timeout=10)
        self.assertEqual(reply["parent_header"]["msg_id"], msg_id)
        self.assertEqual(reply["content"]["implementation"], "rlm_kernel")


@unittest.skipIf(UNSUPPORTED is not None, str(UNSUPPORTED))
class RLMSandboxedKernelConformance(RLMKernelConformance):
    """The same, in the sandbox: completion, inspection, history (kept in memory), rich output."""

    kernel_name = "rlm-sandboxed"

    def test_kernel_info_says_it_is_sandboxed(self) -> None:
        self.flush_channels()
        self.kc.kernel_info()
        reply = self.kc.get_shell_msg(timeout=10)
        self.assertIn("sandboxed (Landlock ABI", reply["content"]["banner"])


if __name__ == "__main__":
    unittest.main()
