"""One GRPO step (TRL, CPU) with the MR as its reward function (`collabgen.reward.trl_reward`).

The policy trained is a tiny random Llama with a word-level tokenizer built here; the
user simulator, the futures' policy and the judge are the scripted fake server. The
rewards TRL received are captured and must be what the Python API gives the same
completions again, from the cache (no new server call); a judge that never answers in
its format gives None (TRL's "no reward"), never 0. Needs torch, transformers, trl.
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("trl")

import datasets

from collabgen.reward import MultiturnReward, trl_reward
from tests.fakeserver import FakeLLMServer
from tests.helpers import SEEDS, math_recipe, write_recipe
from tests.scripts import JUDGE, install_math, judge, never_parsable_judge
from tests.test_trl import tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.slow

ROWS = [json.loads(line) for line in (SEEDS / "math.jsonl").read_text().splitlines() if line.strip()][:2]
FAILING = "7 \\times 6"  # the judge fails every request about this problem


def failing_judge(call):
    return never_parsable_judge(call) if FAILING in call.messages[-1]["content"] else judge(call)


def test_one_grpo_step_takes_the_mr_and_leaves_failed_samples_unrewarded(tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    dataset = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": f"hey, can you help me with this: {row['problem']}"}],
         "problem": row["problem"], "solution": row["solution"]}
        for row in ROWS
    ])
    tokenizer = tiny_tokenizer([m["content"] for row in dataset for m in row["prompt"]] + [r["solution"] for r in ROWS])
    model = tiny_llama(tokenizer)
    with FakeLLMServer(latency=0.05) as server:
        install_math(server)
        server.set_script(JUDGE, failing_judge)
        recipe = write_recipe(tmp_path / "math.yaml", math_recipe(server.base_url, tmp_path / "out"))
        reward = trl_reward(recipe)
        seen: list[tuple[list, list, list, dict, list]] = []

        def multiturn_reward(prompts, completions, completion_ids=None, **kwargs):
            scores = reward(prompts, completions, completion_ids, **kwargs)
            seen.append((prompts, completions, completion_ids, kwargs, scores))
            return scores

        args = GRPOConfig(
            output_dir=str(tmp_path / "ckpt"), max_steps=1, per_device_train_batch_size=4, num_generations=2,
            max_completion_length=8, learning_rate=1e-3, report_to="none", bf16=False, use_cpu=True,
            save_strategy="no", logging_steps=1, dataloader_num_workers=0, seed=0,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=[multiturn_reward], args=args, train_dataset=dataset,
                              processing_class=tokenizer)
        result = trainer.train()
        reward.close()
        assert result.global_step == 1
        [(prompts, completions, completion_ids, kwargs, scores)] = seen
        assert len(scores) == 4
        failing = [FAILING in p[-1]["content"] for p in prompts]
        assert sorted(failing) == [False, False, True, True]
        assert all((s is None) == f for s, f in zip(scores, failing)), scores  # None, never 0
        assert all(r.futures == 2 for r in reward.last_results)
        assert server.max_in_flight >= 4  # the batch's completions were rolled out together, not one by one
        assert any(entry.get("collabgen/mr_failed") == 2.0 for entry in trainer.state.log_history)

        calls = len(server.ok_calls())
        items = reward.items(prompts, completions, completion_ids, kwargs)

        async def again():
            async with MultiturnReward.from_recipe(recipe) as api:
                return await api.score_batch(items)

        assert [r.score for r in asyncio.run(again())] == scores
        assert len(server.ok_calls()) == calls  # every request answered by the cache
