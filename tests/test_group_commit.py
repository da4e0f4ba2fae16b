"""The delivery log's group commit: rounds gather the outcomes of several connections.

Each round is one transaction; a worker still waits for its own outcome to be
written before its next message, so gathering widens nothing a crash can repeat.
"""

from __future__ import annotations

import asyncio

from newsletter.mail.delivery import RoundBatcher


def batcher(parties: int, window: float) -> tuple[RoundBatcher[int, int], list[list[int]]]:
    rounds: list[list[int]] = []

    async def work(items: list[int]) -> list[int]:
        rounds.append(list(items))
        return [item * 10 for item in items]

    return RoundBatcher(work, window=window, parties=lambda: parties), rounds


async def _submit_later(rounds: RoundBatcher[int, int], item: int, after: float) -> int:
    await asyncio.sleep(after)
    return await rounds.submit(item)


def test_outcomes_arriving_within_the_window_share_one_round():
    async def scenario():
        rounds, calls = batcher(parties=10, window=0.5)
        runner = asyncio.create_task(rounds.run())
        answers = await asyncio.gather(*(_submit_later(rounds, i, 0.01 * i) for i in range(1, 4)))
        rounds.close()
        await runner
        return answers, calls

    answers, calls = asyncio.run(scenario())
    assert answers == [10, 20, 30], "each submitter gets its own answer"
    assert calls == [[1, 2, 3]], "one transaction for the three"


def test_a_round_does_not_wait_once_every_worker_is_in():
    async def scenario():
        rounds, calls = batcher(parties=3, window=3600)  # a window nobody would ever see the end of
        runner = asyncio.create_task(rounds.run())
        answers = await asyncio.wait_for(asyncio.gather(*(rounds.submit(i) for i in range(3))), timeout=30)
        rounds.close()
        await runner
        return answers, calls

    answers, calls = asyncio.run(scenario())
    assert answers == [0, 10, 20] and calls == [[0, 1, 2]]


def test_a_lone_worker_waits_no_longer_than_the_window():
    async def scenario():
        rounds, calls = batcher(parties=5, window=0.01)  # four connections are busy elsewhere
        runner = asyncio.create_task(rounds.run())
        answer = await asyncio.wait_for(rounds.submit(7), timeout=30)
        second = await asyncio.wait_for(rounds.submit(8), timeout=30)
        rounds.close()
        await runner
        return (answer, second), calls

    answers, calls = asyncio.run(scenario())
    assert answers == (70, 80) and calls == [[7], [8]]


def test_closing_ends_a_round_that_is_waiting_out_its_window():
    async def scenario():
        rounds, calls = batcher(parties=5, window=3600)
        runner = asyncio.create_task(rounds.run())
        pending = asyncio.create_task(rounds.submit(1))
        await asyncio.sleep(0.05)
        rounds.close()
        answer = await asyncio.wait_for(pending, timeout=30)
        await asyncio.wait_for(runner, timeout=30)
        return answer, calls

    answer, calls = asyncio.run(scenario())
    assert answer == 10 and calls == [[1]], "the last outcomes are written when the run ends"
