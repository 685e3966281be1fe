"""Who may change a conversation's members: the rules, decided on facts storage read under the
conversation's row lock (storage/conversations.py `GroupChange`)."""

from __future__ import annotations

from chatd.errors import ChatdError, Code
from chatd.storage.conversations import GroupFacts


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
