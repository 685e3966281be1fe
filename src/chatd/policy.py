"""Who may change a conversation's members, and who may edit or delete a message: the rules,
decided on facts storage read under the conversation's row lock (storage/conversations.py
`GroupChange`, storage/amends.py `Amend`)."""

from __future__ import annotations

from chatd.errors import ChatdError, Code
from chatd.storage.amends import AmendFacts, Original
from chatd.storage.conversations import GroupFacts
from chatd.storage.records import Kind


def may_change_members(facts: GroupFacts) -> None:
    """The actor is a member, and the conversation is a group (a direct one never changes)."""
    if facts.kind is None or facts.actor_role is None:
        raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
    if facts.kind != "group":
        raise ChatdError(Code.NOT_A_GROUP, "members of a direct conversation cannot change")


def may_remove(facts: GroupFacts, actor: int, user_ids: list[int]) -> None:
    """Owners remove anyone; other members only themselves (leaving)."""
    may_change_members(facts)
    if facts.actor_role != "owner" and set(user_ids) != {actor}:
        raise ChatdError(Code.FORBIDDEN, "only an owner can remove other members")


def within_group_size(member_count: int, max_members: int) -> None:
    if member_count > max_members:
        raise ChatdError(Code.GROUP_FULL, f"a group holds at most {max_members} members")


def _message(facts: AmendFacts, seq: int) -> Original:
    """The actor is a member and `seq` is a message that is still there."""
    if facts.conversation_kind is None or facts.actor_role is None:
        raise ChatdError(Code.NOT_MEMBER, "not a member of this conversation")
    original = facts.original
    if original is None or original.kind != Kind.TEXT:
        raise ChatdError(Code.NOT_FOUND, f"no message at seq {seq}", field="seq")
    if original.deleted:
        raise ChatdError(Code.MESSAGE_DELETED, f"the message at seq {seq} was deleted", field="seq")
    return original


def may_edit(facts: AmendFacts, actor: int, seq: int, window_s: int) -> None:
    """Only the author, and only within the edit window (CHATD_EDIT_WINDOW_S)."""
    original = _message(facts, seq)
    if original.sender_id != actor:
        raise ChatdError(Code.FORBIDDEN, "only its author can edit a message")
    if original.age_s > window_s:
        raise ChatdError(
            Code.EDIT_WINDOW_CLOSED,
            f"messages can be edited up to {window_s} s after sending",
            window_s=window_s,
        )


def may_delete(facts: AmendFacts, actor: int, seq: int) -> None:
    """The author, or an owner of the group (a direct conversation has no owner)."""
    original = _message(facts, seq)
    owner = facts.conversation_kind == "group" and facts.actor_role == "owner"
    if original.sender_id != actor and not owner:
        raise ChatdError(Code.FORBIDDEN, "only its author or a group owner can delete a message")
