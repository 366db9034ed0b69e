"""Tests of the inferd Python package against a running daemon.

Run by tests/check_python.c (make test), which starts inferd with the
tiny test models (l2 = tiny-llama2, l3 = tiny-llama3) and sets
INFERD_SOCKET, INFERD_TEST_DATA and INFER_LIB. Expected values come from
the models' golden.json (HF transformers reference)."""
import json
import os
import unittest

import inferd

SOCK = os.environ.get("INFERD_SOCKET")
DATA = os.environ.get("INFERD_TEST_DATA", "build/testdata")


def golden(model):
    with open(os.path.join(DATA, "models", model, "golden.json")) as f:
        return json.load(f)["prompts"][0]


class TestClient(unittest.TestCase):
    def setUp(self):
        self.c = inferd.Client(SOCK)

    def tearDown(self):
        self.c.close()

    def test_ping_models(self):
        self.c.ping()
        names = [m["name"] for m in self.c.models()]
        self.assertIn("l2", names)
        self.assertIn("l3", names)
        self.assertIn("version", json.dumps(self.c.status()))
        self.assertRegex(inferd.library_version(), r"^\d+\.\d+\.\d+$")

    def test_tokenize_detokenize(self):
        g = golden("tiny-llama2")
        ids = self.c.tokenize("l2", g["text"])
        self.assertEqual(ids, g["ids"])
        self.assertEqual(self.c.detokenize("l2", ids[1:]), g["text"])

    def test_generate_streams_golden_greedy(self):
        for model, name in (("l2", "tiny-llama2"), ("l3", "tiny-llama3")):
            g = golden(name)
            n = len(g["greedy"])
            gen = self.c.generate(model, g["text"], max_tokens=n,
                                  temperature=0, ignore_eos=True)
            pieces = list(gen)
            self.assertGreater(len(pieces), 1)  # streamed, not one blob
            self.assertEqual([p.token for p in pieces], g["greedy"])
            self.assertEqual("".join(p.text for p in pieces), g["greedy_text"])
            r = gen.result
            self.assertEqual(r["finish"], "length")
            self.assertEqual(r["gen_tokens"], n)
            self.assertEqual(r["prompt_tokens"], len(g["ids"]))
            self.assertGreater(r["tok_s"], 0)

    def test_chat_messages(self):
        text, r = self.c.complete("l2", messages=[("user", "hello")],
                                  chat_template="chatml", max_tokens=5,
                                  temperature=0, ignore_eos=True)
        self.assertEqual(r["gen_tokens"], 5)
        # the template wraps the message: more prompt tokens than "hello"
        self.assertGreater(r["prompt_tokens"], len(self.c.tokenize("l2", "hello")))

    def test_break_cancels_and_client_stays_usable(self):
        gen = self.c.generate("l2", "Once upon a time", max_tokens=200,
                              temperature=0, ignore_eos=True)
        for i, _ in enumerate(gen):
            if i == 2:
                break
        gen.cancel()
        self.assertTrue(gen.done)
        self.assertEqual(gen.result["finish"], "cancel")
        self.assertLess(gen.result["gen_tokens"], 200)
        self.c.ping()
        text, r = self.c.complete("l2", "Once upon a time", max_tokens=3,
                                  temperature=0, ignore_eos=True)
        self.assertEqual(r["gen_tokens"], 3)

    def test_metrics(self):
        self.c.complete("l2", "Once upon a time", max_tokens=2,
                        temperature=0, ignore_eos=True)
        text = self.c.metrics()
        self.assertIn("# TYPE inferd_requests_total counter", text)
        key = ('inferd_requests_total{model="l2",op="generate",uid="%d",'
               'status="ok"} ' % os.getuid())
        line = [x for x in text.splitlines() if x.startswith(key)]
        self.assertEqual(len(line), 1)
        self.assertGreaterEqual(int(line[0].split()[-1]), 1)

    def test_errors(self):
        with self.assertRaises(inferd.InferError) as e:
            list(self.c.generate("no-such-model", "hi"))
        self.assertEqual(e.exception.code, -9)  # INFER_ENOTFOUND
        with self.assertRaises(inferd.InferError) as e:
            inferd.Client("/nonexistent/inferd.sock")
        self.assertEqual(e.exception.code, -3)  # INFER_ECONNECT


if __name__ == "__main__":
    unittest.main()
