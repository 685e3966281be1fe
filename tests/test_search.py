"""Search (GET /v1/search): members only, a removed member up to the removal, pages, safe snippets."""

from __future__ import annotations

import random
import string
from typing import Any

from tests.helpers import Api, User, Ws


def word() -> str:
    """A made-up word no other test's message contains."""
    return "zq" + "".join(random.choices(string.ascii_lowercase, k=10))


async def search(api: Api, user: User, q: str, **params: Any) -> dict[str, Any]:
    response = await api.call("GET", "/v1/search", user.token, params={"q": q, **params})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def hits(result: dict[str, Any]) -> list[str]:
    return [seg["text"] for seg in result["snippet"] if seg["hit"]]


def text(result: dict[str, Any]) -> str:
    return "".join(seg["text"] for seg in result["snippet"])


async def test_finds_a_message_with_conversation_seq_and_highlight(w1: Api, w2: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    key = word()
    a = await Ws.connect(w1.base_url, alice.token)
    assert (await a.send(cid, "unrelated chatter"))["type"] == "ack"
    ack = await a.send(cid, f"we agreed on {key} for the parsers at last")
    found = await search(w2, bob, f"{key} parser")  # stemmed: "parser" finds "parsers"
    assert [(r["conversation_id"], r["seq"], r["id"]) for r in found["results"]] == [
        (cid, ack["seq"], ack["message_id"])
    ]
    result = found["results"][0]
    assert result["sender_id"] == alice.id
    assert sorted(hits(result)) == sorted([key, "parsers"])
    assert text(result) == f"we agreed on {key} for the parsers at last"
    assert found["next_before"] is None
    await a.close()


async def test_an_outsider_never_finds_another_conversations_text(w1: Api) -> None:
    alice, bob, mallory = await w1.user(), await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    group = await w1.group(alice, [bob], "secret plans")
    key = word()
    a = await Ws.connect(w1.base_url, alice.token)
    for target in (cid, group):
        assert (await a.send(target, f"the {key} is under the mat"))["type"] == "ack"
    assert len((await search(w1, bob, key))["results"]) == 2  # the text is there to be found
    assert (await search(w1, mallory, key))["results"] == []
    for target in (cid, group):  # naming the conversation does not help
        assert (await search(w1, mallory, key, conversation_id=target))["results"] == []
    await a.close()


async def test_a_removed_member_finds_only_what_was_said_before_the_removal(w1: Api) -> None:
    owner, member, leaver = await w1.user(), await w1.user(), await w1.user()
    cid = await w1.group(owner, [member, leaver])
    key = word()
    o = await Ws.connect(w1.base_url, owner.token)
    before = await o.send(cid, f"{key} before anyone went")
    removed = await w1.call("DELETE", f"/v1/conversations/{cid}/members/{member.id}", owner.token)
    assert removed.status_code == 200 and removed.json()["event"] is not None
    between = await o.send(cid, f"{key} said after the removal")
    left = await w1.call("DELETE", f"/v1/conversations/{cid}/members/{leaver.id}", leaver.token)
    assert left.status_code == 200 and left.json()["event"] is not None
    after = await o.send(cid, f"{key} said after both went")

    def seqs(found: dict[str, Any]) -> list[int]:
        return [r["seq"] for r in found["results"]]

    assert seqs(await search(w1, owner, key)) == [after["seq"], between["seq"], before["seq"]]
    assert seqs(await search(w1, member, key)) == [before["seq"]]
    assert seqs(await search(w1, leaver, key)) == [between["seq"], before["seq"]]
    # Added back: a member again, so the whole conversation, as its history is.
    added = await w1.call(
        "POST", f"/v1/conversations/{cid}/members", owner.token, {"usernames": [member.name]}
    )
    assert added.status_code == 200, added.text
    assert seqs(await search(w1, member, key)) == [after["seq"], between["seq"], before["seq"]]
    await o.close()


async def test_results_come_newest_first_a_page_at_a_time(w1: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    other = await w1.group(alice, [bob])
    key = word()
    a = await Ws.connect(w1.base_url, alice.token)
    sent = [await a.send((cid, other)[i % 2], f"{key} number {i}") for i in range(5)]
    pages, before = [], None
    while True:
        found = await search(w1, bob, key, limit=2, **({"before": before} if before else {}))
        pages.append([(r["conversation_id"], r["seq"]) for r in found["results"]])
        before = found["next_before"]
        if before is None:
            break
    expected = [(ack["conversation_id"], ack["seq"]) for ack in reversed(sent)]
    assert pages == [expected[0:2], expected[2:4], expected[4:5]]
    only = await search(w1, bob, key, conversation_id=cid)
    assert [(r["conversation_id"], r["seq"]) for r in only["results"]] == [e for e in expected if e[0] == cid]
    await a.close()


async def test_snippets_are_plain_text_and_cannot_forge_a_highlight(w1: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    key = word()
    body = f'<img src=x onerror="alert(1)"> <mark>forged</mark> {key} &amp; <b>bold</b>'
    a = await Ws.connect(w1.base_url, alice.token)
    assert (await a.send(cid, body))["type"] == "ack"
    [result] = (await search(w1, bob, key))["results"]
    assert hits(result) == [key]
    assert text(result) == body  # as written, not markup
    await a.close()


async def test_a_deleted_message_is_not_found_and_an_edited_one_by_its_new_text(w1: Api) -> None:
    """The index is on the original row's own body, which an edit rewrites and a deletion empties
    (migration 0009): no copy of the text is left to find."""
    from tests.test_edit_delete import delete, edit

    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    gone, old, new = word(), word(), word()
    a = await Ws.connect(w1.base_url, alice.token)
    deleted = await a.send(cid, f"delete this {gone} later")
    edited = await a.send(cid, f"a typo {old} here")
    assert [r["seq"] for r in (await search(w1, bob, gone))["results"]] == [deleted["seq"]]
    assert (await delete(a, cid, deleted["seq"]))["type"] == "ack"
    assert (await edit(a, cid, edited["seq"], f"fixed {new} here"))["type"] == "ack"
    assert (await search(w1, bob, gone))["results"] == []
    assert (await search(w1, alice, gone))["results"] == []
    assert (await search(w1, bob, old))["results"] == []
    [found] = (await search(w1, bob, new))["results"]
    assert (found["seq"], hits(found)) == (edited["seq"], [new])
    await a.close()


async def test_a_long_message_is_cut_around_the_first_hit(w1: Api) -> None:
    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    key = word()
    body = " ".join(f"w{i}" for i in range(200)) + f" {key} " + " ".join(f"v{i}" for i in range(200))
    a = await Ws.connect(w1.base_url, alice.token)
    assert (await a.send(cid, body))["type"] == "ack"
    [result] = (await search(w1, bob, key))["results"]
    assert hits(result) == [key]
    snippet = text(result)
    assert snippet.startswith("…") and snippet.endswith("…") and len(snippet) < 300
    assert snippet.strip("…") in body
    await a.close()


async def test_bad_queries_get_bad_request(w1: Api) -> None:
    alice = await w1.user()
    for params in (
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 201},
        {"q": "a", "limit": "0"},
        {"q": "a", "limit": "51"},
    ):
        response = await w1.call("GET", "/v1/search", alice.token, params=params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"]["code"] == "bad_request"
    response = await w1.call("GET", "/v1/search", None, params={"q": "a"})
    assert response.status_code == 401
    # Only stop words, or operators alone: a valid query that matches nothing.
    for q in ("the and of", '" - or'):
        assert (await search(w1, alice, q))["results"] == []


async def test_terminal_client_search_prints_results_with_hits(w1: Api) -> None:
    from chatd.client.commands import Commands
    from chatd.client.session import ChatSession

    alice, bob = await w1.user(), await w1.user()
    cid = await w1.direct(alice, bob)
    key = word()
    a = await Ws.connect(w1.base_url, alice.token)
    acks = [await a.send(cid, f"{key} number {n}") for n in range(22)]
    lines: list[str] = []
    conv = {"id": cid, "kind": "direct", "title": None}
    chat = Commands(
        ChatSession(
            w1.base_url, {"token": bob.token, "user_id": bob.id}, conv, {alice.id: alice.name}, lines.append
        )
    )
    await chat.search(key)
    assert len(lines) == 21 and lines[-1] == "* more: /more"
    assert lines[0].startswith(f"#{cid}:{acks[-1]['seq']} ") and lines[0].endswith(
        f"{alice.name}: [{key}] number 21"
    )
    await chat.search("", more=True)
    assert lines[21:] == [line for line in lines[21:] if line.startswith(f"#{cid}:")] and len(lines) == 23
    await chat.search("zzzznothingmatches")
    assert lines[-1] == "* nothing found for 'zzzznothingmatches'"
    await a.close()
