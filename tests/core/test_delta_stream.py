"""A model reply's answer is streamed as a bounded number of ``message_delta`` events.

The user controls how many pieces the model streams (the scripted model answers
word by word and echoes its input), and every event costs the shared event loop;
so after ``TENET_DELTA_BURST`` pieces, pieces arriving faster than one per
``TENET_DELTA_INTERVAL_MS`` are joined. Nothing is lost or reordered.
"""

from __future__ import annotations

from collections.abc import Callable

from core_support import new_thread, new_user, run_to_end
from protocol_checks import assert_run_well_formed, assert_seq_gap_free

from tenet import Service
from tenet.delta_stream import DeltaStream
from tenet.settings import Settings

#: One input at the length limit made only of words: the scripted model echoes it.
WORDS = 4000
MANY_WORDS = "use " + "a=b " * WORDS


async def test_a_reply_of_thousands_of_words_is_a_bounded_number_of_events(
    make_settings: Callable[..., Settings],
) -> None:
    async with Service(make_settings(delta_burst=8, delta_interval_ms=60_000)) as service:
        user = await new_user(service)
        thread = await new_thread(service, user)
        run, events = await run_to_end(service, user, thread, "assistant", MANY_WORDS)

    terminal = assert_run_well_formed(events)
    assert_seq_gap_free(events)
    assert run.status == "completed"
    deltas = [e["text"] for e in events if e["type"] == "message_delta"]
    # Eight pieces as they came, then the rest joined (the interval never passes).
    assert len(deltas) == 9, len(deltas)
    assert deltas[:8] == ["You ", "said: ", "use ", "a=b ", "a=b ", "a=b ", "a=b ", "a=b "]
    assert "".join(deltas) == terminal["final_response"]
    assert terminal["final_response"] == "You said: " + MANY_WORDS


async def test_the_default_bounds_a_reply_made_of_the_longest_input(service: Service) -> None:
    user = await new_user(service)
    thread = await new_thread(service, user)
    text = "use " + "a=b " * (service.settings.max_input_chars // 4 - 2)
    run, events = await run_to_end(service, user, thread, "assistant", text)

    terminal = assert_run_well_formed(events)
    assert run.status == "completed"
    deltas = [e["text"] for e in events if e["type"] == "message_delta"]
    assert len(deltas) <= service.settings.delta_burst + 50, len(deltas)
    assert "".join(deltas) == terminal["final_response"] == "You said: " + text


async def test_a_short_answer_still_streams_word_by_word(service: Service) -> None:
    user = await new_user(service)
    thread = await new_thread(service, user)
    _, events = await run_to_end(service, user, thread, "assistant", "what is 6 * 7?")

    deltas = [e["text"] for e in events if e["type"] == "message_delta"]
    assert deltas == ["The ", "answer ", "is ", "42."]


async def test_pieces_after_the_burst_are_joined_until_the_interval_passes() -> None:
    now = [0.0]
    said: list[str] = []

    async def say(text: str) -> None:
        said.append(text)

    stream = DeltaStream(say, burst=2, interval_s=1.0, clock=lambda: now[0])
    for piece in ("a", "b", "c", "d"):  # a, b: the burst; c, d: within the interval
        await stream.add(piece)
    assert said == ["a", "b"]
    now[0] = 1.5  # the interval since "b" has passed: e goes out, with what was held
    await stream.add("e")
    assert said == ["a", "b", "cde"]
    await stream.add("f")
    await stream.add("")  # an empty piece is no piece
    assert said == ["a", "b", "cde"]
    await stream.flush()
    await stream.flush()  # nothing held: nothing sent
    assert said == ["a", "b", "cde", "f"]
    assert (stream.pieces, stream.sent) == (6, 4)


async def test_a_zero_interval_never_joins() -> None:
    said: list[str] = []

    async def say(text: str) -> None:
        said.append(text)

    stream = DeltaStream(say, burst=1, interval_s=0.0)
    for piece in "abcdef":
        await stream.add(piece)
    assert said == list("abcdef")


async def test_held_text_goes_out_before_a_reasoning_step_and_at_the_end() -> None:
    from tenet.delta_stream import stream_reply
    from tenet.models.base import ModelReply

    log: list[tuple[str, str]] = []

    class Ctx:
        async def say(self, text: str) -> None:
            log.append(("delta", text))

        async def think(self, text: str) -> None:
            log.append(("thinking", text))

    class Model:
        async def complete(self, messages, tools, *, on_delta=None, on_reasoning=None):  # type: ignore[no-untyped-def]
            for piece in ("a", "b", "c"):
                await on_delta(piece)
            await on_reasoning("hm")
            for piece in ("d", "e"):
                await on_delta(piece)
            return ModelReply(content="abcde")

    reply = await stream_reply(Ctx(), Model(), [], [], burst=1, interval_s=60.0)  # type: ignore[arg-type]
    assert reply.content == "abcde"
    assert log == [("delta", "a"), ("delta", "bc"), ("thinking", "hm"), ("delta", "de")]
