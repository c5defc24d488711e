"""Whose conversation a call is in, and where its events go.

A conversation belongs to an account: the same conversation id used by two
accounts is two conversations, with their own calls, variables, failures and
bills. Everything keyed by a conversation (call marks, dedupe ids, variables,
loop counts) is keyed by ``Conversation.key``.

A call's events go back the way the call came: to the shared ``runtime``
user's subjects, or to the subjects of the account whose own runtime
credentials placed it (``runtime_account``), which only that account's
runtimes hear (see ``shared.contract.subjects``).
"""

from dataclasses import dataclass

from shared.contract import subjects


@dataclass(frozen=True)
class Conversation:
    account_id: str
    conversation_id: str
    # The account whose own runtimes placed the call; None: the shared runtime user.
    runtime_account: str | None = None

    @property
    def key(self) -> str:
        """One account's conversation, as a KV key and dedupe-id part (ids hold no ``/``)."""
        return conversation_key(self.account_id, self.conversation_id)

    @property
    def pending_subject(self) -> str:
        return subjects.pending(self.conversation_id, self.runtime_account)

    @property
    def result_subject(self) -> str:
        return subjects.result(self.conversation_id, self.runtime_account)

    @property
    def progress_subject(self) -> str:
        return subjects.progress(self.conversation_id, self.runtime_account)

    @property
    def stream(self) -> str:
        """Where its events are stored (``shared.fabric.jetstream``)."""
        shared = self.runtime_account is None
        return subjects.CONV_STREAM if shared else subjects.ACCOUNT_CONV_STREAM


def conversation_key(account_id: str, conversation_id: str) -> str:
    return f"{account_id}/{conversation_id}"
