"""genlm-control's side of tests/test_lm_genlm_parity.py and benchmarks/lm_constrained.py, run by the
interpreter that has genlm-control 0.4.1 (a separate venv keeps its ~40 dependencies out of the
project's environment; pyproject.toml says how to make one):

    GENLM_PYTHON benchmarks/genlm_driver.py JOB.json     # prints one JSON object on stdout

Both libraries see the SAME distributions: for jobs on `model.table_lm` the language model genlm
samples from is our TableLM wrapped as a genlm `AsyncLM` (its next-token log-probabilities come from
our table), and the constraint is our byte-level `Potential` (`WordsPotential`, below) wrapped as a
genlm `Potential` over bytes, coerced to the LM's tokens exactly as genlm users coerce `BoolFSA`.

Jobs (field "kind"):
- "table_awrs": AWRS(llm, condition, seed) first-token draws after each prompt; per draw the token id, the log
  weight (genlm's log Z-hat), the constraint evaluations and how many of them accepted.
- "table_smc": SMC(AWRS(...))(n_particles, ess_threshold, max_tokens) repeated; log_ml per run.
- "hf_awrs": AWRS first-token draws on a GGUF model after given prompt ids (the SmolLM2 parity test).
- "hf": SmolLM2 from a GGUF file (transformers, float32, 1 thread) with genlm's own constraints
  (BoolFSA.from_regex, JsonSchema); per (particles, repeat): wall time, constraint evaluations,
  texts, log weights. The model and tokenizer load once per job; the logprob/KV trie is cleared
  before every timed sample, so no sample reuses another's forward passes."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch

from samplegraph.nodes.lm.potential import NEG_INF, Potential
from samplegraph.nodes.lm.table_lm import ModelTableLM, TableLM


class WordsPotential(Potential):
    """A boolean byte constraint: a text is a valid prefix iff it starts one of `words`, and complete iff
    it is one of them (the user-predicate kind of constraint; exact for enumeration)."""

    def __init__(self, words: Sequence[str]):
        self.words = tuple(w.encode() for w in words)

    def prefix(self, texts: Sequence[bytes]) -> torch.Tensor:
        return torch.tensor([0.0 if any(w.startswith(t) for w in self.words) else NEG_INF for t in texts],
                            dtype=torch.float64)

    def complete(self, texts: Sequence[bytes]) -> torch.Tensor:
        return torch.tensor([0.0 if t in self.words else NEG_INF for t in texts], dtype=torch.float64)


def table_lm(spec: dict[str, Any]) -> TableLM:
    """Our TableLM from a job's "lm" fields (model.table_lm's params)."""
    return ModelTableLM(**spec).run()  # type: ignore[return-value]


class Counter:
    """Constraint evaluations (contexts asked about) and how many were accepted (log-weight 0)."""

    def __init__(self) -> None:
        self.evaluations = self.accepted = 0

    def add(self, weights: Sequence[float]) -> None:
        self.evaluations += len(weights)
        self.accepted += sum(1 for w in weights if w == 0.0)

    def take(self) -> tuple[int, int]:
        out = (self.evaluations, self.accepted)
        self.evaluations = self.accepted = 0
        return out


def genlm_table_llm(lm: TableLM, prompt_ids: list[int]) -> Any:
    """Our TableLM as genlm's PromptedLLM, through an AsyncLM subclass; EOS and BOS (both b"") are its EOS
    byte string, BOS having probability 0 after any token."""
    from genlm.backend.llm.base import AsyncLM
    from genlm.backend.tokenization.token import Token
    from genlm.control import PromptedLLM

    class TableAsyncLM(AsyncLM):
        """genlm's AsyncLM whose next-token log-probabilities are our table's rows."""

        def __init__(self, table: TableLM):
            self.table = table
            self.tokenizer = SimpleNamespace(eos_token_id=table.eos_id)
            self.byte_vocab = [Token(i, b) for i, b in enumerate(table.vocab.tokens)]
            self.str_vocab = [b.decode() for b in table.vocab.tokens]
            self._batch_queue, self._batch_armed = [], False

        async def next_token_logprobs(self, token_ids, lora_name=None):
            return self.next_token_logprobs_sync(token_ids)

        def next_token_logprobs_sync(self, token_ids, lora_name=None):
            state = self.table.start([list(token_ids)], torch.arange(1), 1)
            return self.table.next_logprobs(state)[0][0, 0]  # (V,) float64

    return PromptedLLM(TableAsyncLM(lm), prompt_ids=prompt_ids, eos_byte_strings=[b""])


def genlm_byte_condition(potential: Potential, counter: Counter) -> Any:
    """Our byte-level Potential as a genlm boolean Potential over the 256 byte values, counted."""
    from genlm.control import Potential as GenlmPotential

    class ByteCondition(GenlmPotential):
        """genlm Potential over bytes asking our Potential (prefix / complete) about each context."""

        def __init__(self) -> None:
            super().__init__(list(range(256)))

        async def prefix(self, context):
            return (await self.batch_prefix([context]))[0]

        async def complete(self, context):
            return (await self.batch_complete([context]))[0]

        async def batch_prefix(self, contexts):
            out = potential.prefix([bytes(c) for c in contexts]).tolist()
            counter.add(out)
            return _array(out)

        async def batch_complete(self, contexts):
            out = potential.complete([bytes(c) for c in contexts]).tolist()
            counter.add(out)
            return _array(out)

    return ByteCondition()


def counted(inner: Any, counter: Counter) -> Any:
    """A genlm Potential that forwards to `inner` (its batched methods included) and counts contexts."""
    from genlm.control import Potential as GenlmPotential

    class Counted(GenlmPotential):
        def __init__(self) -> None:
            super().__init__(inner.vocab, tables=inner.tables)

        async def prefix(self, context):
            return (await self.batch_prefix([context]))[0]

        async def complete(self, context):
            return (await self.batch_complete([context]))[0]

        async def batch_prefix(self, contexts):
            out = await inner.batch_prefix(contexts)
            counter.add(list(out))
            return out

        async def batch_complete(self, contexts):
            out = await inner.batch_complete(contexts)
            counter.add(list(out))
            return out

    return Counted()


def _array(values: list[float]) -> Any:
    import numpy as np
    return np.array(values, dtype=np.float64)


def run_table_awrs(job: dict[str, Any]) -> dict[str, Any]:
    """genlm AWRS first-token draws after each prompt text of job["prompts"] (the constraint sees the
    generated text only, so each prompt is one more next-token distribution of the table)."""
    from genlm.control import AWRS

    lm = table_lm(job["lm"])
    results = []
    for k, prompt in enumerate(job["prompts"]):
        counter = Counter()
        llm = genlm_table_llm(lm, lm.encode(prompt))
        condition = genlm_byte_condition(WordsPotential(job["words"]), counter).coerce(llm, f=b"".join)
        sampler = AWRS(llm, condition, seed=int(job.get("seed", 0)) + k)
        draws = []
        for _ in range(int(job["draws"])):
            counter.take()
            token, logw, _ = asyncio.run(sampler.sample([]))
            evaluations, accepted = counter.take()
            tid = lm.eos_id if token is llm.eos else int(token.token_id)
            draws.append([tid, float(logw), evaluations, accepted])
        results.append({"prompt": prompt, "draws": draws})
    return {"prompts": results}


def run_table_smc(job: dict[str, Any]) -> dict[str, Any]:
    """log_ml of job["runs"] SMC runs with AWRS proposals and no critic (target p(x) c(x) / Z)."""
    import numpy as np
    from genlm.control import AWRS, SMC

    lm = table_lm(job["lm"])
    counter = Counter()
    llm = genlm_table_llm(lm, lm.encode(job.get("prompt", "")))
    condition = genlm_byte_condition(WordsPotential(job["words"]), counter).coerce(llm, f=b"".join)
    runs = []
    for r in range(int(job["runs"])):
        np.random.seed(int(job.get("seed", 0)) + r)  # genlm resamples with the global numpy RNG
        smc = SMC(AWRS(llm, condition, seed=int(job.get("seed", 0)) + r))
        counter.take()
        seqs = asyncio.run(smc(n_particles=int(job["particles"]), ess_threshold=float(job["ess_threshold"]),
                               max_tokens=int(job["max_tokens"])))
        evaluations, accepted = counter.take()
        texts = [b"".join(bytes(t) for t in c if t is not llm.eos).decode() for c in seqs.contexts]
        runs.append({"log_ml": float(seqs.log_ml), "evaluations": evaluations, "accepted": accepted,
                     "texts": texts, "log_weights": [float(w) for w in seqs.log_weights]})
    return {"runs": runs}


def load_hf(gguf: str) -> tuple[Any, Any]:
    """SmolLM2 (or any GGUF causal LM) in float32 with its tokenizer, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    folder, name = os.path.split(gguf)
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True,
                                                              dtype=torch.float32)
    return model.eval(), tok


def genlm_constraint(spec: dict[str, Any], llm: Any, counter: Counter) -> Any:
    """genlm's own constraint for {"regex": ...} or {"json_schema": ...}, coerced to the LM's tokens, counted."""
    from genlm.control import BoolFSA, JsonSchema

    if "regex" in spec:
        base = BoolFSA.from_regex(spec["regex"])
    else:
        base = JsonSchema(spec["json_schema"])
    return counted(base.coerce(llm, f=b"".join), counter)


async def timed_smc(llm: Any, condition: Any, particles: int, seed: int, job: dict[str, Any]) -> tuple[Any, float]:
    """One constrained sample (SMC over `particles` AWRS particles) and its wall time, trie cleared first."""
    import numpy as np
    from genlm.control import AWRS, SMC

    llm.model.clear_cache()
    np.random.seed(seed)
    smc = SMC(AWRS(llm, condition, seed=seed))
    start = time.perf_counter()
    seqs = await asyncio.wait_for(smc(n_particles=particles, ess_threshold=float(job.get("ess_threshold", 0.5)),
                                      max_tokens=int(job["max_tokens"])), timeout=float(job.get("timeout_s", 600)))
    return seqs, time.perf_counter() - start


def run_hf(job: dict[str, Any]) -> dict[str, Any]:
    """Timed genlm SMC + AWRS samples on a GGUF model for each constraint and particle count."""
    from genlm.backend.llm.hf import AsyncTransformer
    from genlm.control import PromptedLLM

    torch.set_num_threads(int(job.get("threads", 1)))
    started = time.perf_counter()
    model, tok = load_hf(job["gguf"])
    eos = tok.convert_ids_to_tokens(tok.eos_token_id)
    llm = PromptedLLM(AsyncTransformer(model, tok), eos_byte_strings=[eos.encode()])
    load_s = time.perf_counter() - started
    out = []
    for case in job["cases"]:
        counter = Counter()
        if "prompt_ids" in case:  # the caller's exact prompt tokens (the same ids our side decodes from)
            llm.prompt_ids = list(case["prompt_ids"])
        else:
            prompt = tok.apply_chat_template([{"role": "user", "content": case["prompt"]}], tokenize=False,
                                             add_generation_prompt=True)
            llm.prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        condition = genlm_constraint(case["constraint"], llm, counter)
        for particles in case["particles"]:
            for r in range(int(case["repeats"])):
                counter.take()
                row = {"name": case["name"], "particles": particles, "repeat": r}
                try:
                    seqs, wall = asyncio.run(timed_smc(llm, condition, particles, r, {**job, **case}))
                except (asyncio.TimeoutError, TimeoutError):
                    row.update(timed_out=True, wall_s=float(case.get("timeout_s", job.get("timeout_s", 600))))
                    row["evaluations"], row["accepted"] = counter.take()
                    out.append(row)
                    break
                evaluations, accepted = counter.take()
                texts = [b"".join(bytes(t) for t in c if t is not llm.eos).decode("utf-8", "replace")
                         for c in seqs.contexts]
                tokens = sum(len(c) for c in seqs.contexts)
                row.update(timed_out=False, wall_s=wall, evaluations=evaluations, accepted=accepted, texts=texts,
                           tokens=tokens, log_weights=[_finite(w) for w in seqs.log_weights],
                           log_ml=_finite(seqs.log_ml))
                out.append(row)
    return {"load_s": load_s, "runs": out, "prompt_ids_len": len(llm.prompt_ids)}


def run_hf_awrs(job: dict[str, Any]) -> dict[str, Any]:
    """genlm AWRS first-token draws on a GGUF model after job["prompt_ids"] under one genlm constraint."""
    from genlm.backend.llm.hf import AsyncTransformer
    from genlm.control import AWRS, PromptedLLM

    torch.set_num_threads(int(job.get("threads", 1)))
    model, tok = load_hf(job["gguf"])
    eos = tok.convert_ids_to_tokens(tok.eos_token_id)
    llm = PromptedLLM(AsyncTransformer(model, tok), prompt_ids=list(job["prompt_ids"]),
                      eos_byte_strings=[eos.encode()])
    counter = Counter()
    sampler = AWRS(llm, genlm_constraint(job["constraint"], llm, counter), seed=int(job.get("seed", 0)))

    async def draws() -> list[list]:
        out = []
        for _ in range(int(job["draws"])):
            counter.take()
            token, logw, _ = await sampler.sample([])
            evaluations, accepted = counter.take()
            out.append([-1 if token is llm.eos else int(token.token_id), float(logw), evaluations, accepted])
        return out

    return {"draws": asyncio.run(draws())}


def _finite(x: float) -> float | None:
    """JSON has no -inf: None for a particle that died."""
    return float(x) if math.isfinite(float(x)) else None


def genlm_python() -> str | None:
    """The interpreter that has genlm-control: $GENLM_PYTHON, else this one if it can import it, else None."""
    given = os.environ.get("GENLM_PYTHON")
    if given:
        return given if Path(given).is_file() else None
    try:
        found = importlib.util.find_spec("genlm.control") is not None
    except ModuleNotFoundError:
        found = False
    return sys.executable if found else None


def run_job(python: str, job: dict[str, Any], timeout_s: float = 3600) -> dict[str, Any]:
    """Run one job in `python` (this file as its script, our package first on its path); its JSON result."""
    import samplegraph

    here = str(Path(samplegraph.__file__).parent.parent)  # the directory that holds `samplegraph` on sys.path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    try:
        proc = subprocess.run([python, str(Path(__file__).resolve()), f.name], capture_output=True, text=True,
                              env=env, timeout=timeout_s)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError(f"genlm driver ({python}) failed on a {job['kind']!r} job:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


JOBS = {"table_awrs": run_table_awrs, "table_smc": run_table_smc, "hf": run_hf, "hf_awrs": run_hf_awrs}


def main(argv: list[str]) -> int:
    with open(argv[1]) as f:
        job = json.load(f)
    torch.set_num_threads(int(job.get("threads", 1)))
    result = JOBS[job["kind"]](job)
    import genlm.control
    result["genlm_control"] = getattr(genlm.control, "__version__", None) or _version()
    print(json.dumps(result))
    return 0


def _version() -> str:
    from importlib.metadata import version
    return version("genlm-control")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
