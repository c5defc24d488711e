"""Subject names and stream names: the one place they are spelled.

Public subjects are frozen by the contract; internal ones (``exec``, ``code``,
``executed``, ``dead``, ``runs``, ``replay``, ``timers``, ``deadline``) are
ours and documented in the README.

A runtime signed in with its account's own runtime credentials uses the same
public subjects as the shared ``runtime`` user, in a NATS account of its own;
nats-server maps them into Midcall's account with the account as one more
token (``midcall.calls.<account>.<conversation>``,
``midcall.conv.<account>.<conversation>.<kind>``), so what a tenant's runtime
publishes is known to be that account's, and its events reach that account's
runtimes only. ``runtime_account`` below is that account; None is the shared
user's subjects.
"""

PREFIX = "midcall"

CALLS_STREAM = "MIDCALL_CALLS"
CONV_STREAM = "MIDCALL_CONV"
ACCOUNT_CONV_STREAM = "MIDCALL_ACCOUNT_CONV"
ENDED_STREAM = "MIDCALL_ENDED"
USAGE_STREAM = "MIDCALL_USAGE"
WORK_STREAM = "MIDCALL_WORK"
DEAD_STREAM = "MIDCALL_DEAD"
OPS_STREAM = "MIDCALL_OPS"
TIMERS_STREAM = "MIDCALL_TIMERS"

CATALOG_BUCKET = "midcall_catalog"
CALL_CLAIMS_BUCKET = "midcall_call_claims"
CONVERSATIONS_BUCKET = "midcall_conversations"
API_KEYS_BUCKET = "midcall_api_keys"
SECRETS_BUCKET = "midcall_secrets"
RUNTIME_CREDENTIALS_BUCKET = "midcall_runtime_credentials"
# The completions of calls whose API answered 202 (shared.security.callback_tokens).
CALLBACKS_BUCKET = "midcall_callbacks"


def kv_stream(bucket: str) -> str:
    """The stream JetStream keeps a KV bucket in."""
    return f"KV_{bucket}"


def kv_subject(bucket: str, key: str) -> str:
    """The subject a put of ``key`` in ``bucket`` is published on."""
    return f"$KV.{bucket}.{key}"


ALL_CALLS = f"{PREFIX}.calls.>"
ALL_CONV = f"{PREFIX}.conv.>"
ALL_ENDED = f"{PREFIX}.conv.*.ended"
ALL_CANCELS = f"{PREFIX}.conv.*.cancel"
ALL_PENDING = f"{PREFIX}.conv.*.pending"
ALL_RESULTS = f"{PREFIX}.conv.*.result"
ALL_PROGRESS = f"{PREFIX}.conv.*.progress"
# The same, from and to the runtimes of one account (runtime credentials).
SHARED_CALLS = f"{PREFIX}.calls.*"
ACCOUNT_CALLS = f"{PREFIX}.calls.*.*"
ACCOUNT_ENDED = f"{PREFIX}.conv.*.*.ended"
ACCOUNT_CANCELS = f"{PREFIX}.conv.*.*.cancel"
ACCOUNT_PENDING = f"{PREFIX}.conv.*.*.pending"
ACCOUNT_RESULTS = f"{PREFIX}.conv.*.*.result"
ACCOUNT_PROGRESS = f"{PREFIX}.conv.*.*.progress"
ACCOUNT_STORED = f"{PREFIX}.conv.*.*.stored"
ALL_USAGE = f"{PREFIX}.usage.>"
ALL_EXEC = f"{PREFIX}.exec.>"
ALL_CODE = f"{PREFIX}.code.>"
WORK_SUBJECTS = (ALL_EXEC, ALL_CODE)
ALL_EXECUTED = f"{PREFIX}.executed.>"
ALL_DEAD = f"{PREFIX}.dead.>"
ALL_RUNS = f"{PREFIX}.runs.>"
ALL_REPLAYS = f"{PREFIX}.replay.>"
ALL_TIMERS = f"{PREFIX}.timers.>"
ALL_DEADLINES = f"{PREFIX}.deadline.>"


def calls(conversation_id: str, runtime_account: str | None = None) -> str:
    return f"{PREFIX}.calls.{_scoped(conversation_id, runtime_account)}"


def pending(conversation_id: str, runtime_account: str | None = None) -> str:
    return f"{PREFIX}.conv.{_scoped(conversation_id, runtime_account)}.pending"


def result(conversation_id: str, runtime_account: str | None = None) -> str:
    return f"{PREFIX}.conv.{_scoped(conversation_id, runtime_account)}.result"


def progress(conversation_id: str, runtime_account: str | None = None) -> str:
    """A long-running call's progress, as its API reports it (added with the SDK)."""
    return f"{PREFIX}.conv.{_scoped(conversation_id, runtime_account)}.progress"


def stored(conversation_id: str, runtime_account: str | None = None) -> str:
    """Request/reply: a runtime with its account's credentials asks for a call's stored
    events, which its core subscription missed while it reconnected (added with the SDK)."""
    return f"{PREFIX}.conv.{_scoped(conversation_id, runtime_account)}.stored"


def ended(conversation_id: str, runtime_account: str | None = None) -> str:
    return f"{PREFIX}.conv.{_scoped(conversation_id, runtime_account)}.ended"


def cancel(conversation_id: str, runtime_account: str | None = None) -> str:
    """A runtime cancels one call of the conversation (added with the SDK)."""
    return f"{PREFIX}.conv.{_scoped(conversation_id, runtime_account)}.cancel"


def _scoped(conversation_id: str, runtime_account: str | None) -> str:
    return conversation_id if runtime_account is None else f"{runtime_account}.{conversation_id}"


def call_origin(subject: str) -> tuple[str | None, str | None]:
    """Who placed a call on ``subject``, and in which conversation: ``(runtime_account,
    conversation_id)``; the account is None on the shared runtime user's subject."""
    return _origin(subject.split("."))


def conversation_origin(subject: str) -> tuple[str | None, str | None]:
    """``call_origin`` for what a runtime says of a conversation: its end or a call's cancel
    (``midcall.conv.[<account>.]<conv>.ended`` or ``.cancel``)."""
    return _origin(subject.split(".")[:-1])


def _origin(tokens: list[str]) -> tuple[str | None, str | None]:
    # After "midcall.<kind>": the conversation, or the account and the conversation.
    scoped = tokens[2:]
    if len(scoped) == 2:
        return scoped[0], scoped[1]
    return None, scoped[0] if len(scoped) == 1 else None


def conversation(conversation_id: str, runtime_account: str | None = None) -> str:
    """Everything the fabric says about one conversation (what a runtime listens on)."""
    return f"{PREFIX}.conv.{_scoped(conversation_id, runtime_account)}.>"


def usage(account_id: str) -> str:
    return f"{PREFIX}.usage.{account_id}"


# The work subject of each kind of tool: whose executor runs it.
WORK_TOKENS = {"http": "exec", "python": "code"}


def execute(conversation_id: str, kind: str = "http") -> str:
    """Internal: dispatcher -> the executor of the tool's kind (http- or code-executor)."""
    return f"{PREFIX}.{WORK_TOKENS[kind]}.{conversation_id}"


# Internal, request/reply: whether a code-executor can run python tools here.
SANDBOX_STATUS = f"{PREFIX}.sandbox.status"


def executed(conversation_id: str) -> str:
    """Internal: http-executor -> result-injector."""
    return f"{PREFIX}.executed.{conversation_id}"


def dead(stage: str) -> str:
    """Internal: messages a service could not even parse, kept for ops."""
    return f"{PREFIX}.dead.{stage}"


def runs(conversation_id: str) -> str:
    """Internal: runs of calls that failed, and replays, for the registry's failed-calls store."""
    return f"{PREFIX}.runs.{conversation_id}"


def replay(conversation_id: str) -> str:
    """Internal: the registry asks the dispatcher to run a failed call again."""
    return f"{PREFIX}.replay.{conversation_id}"


def timer(conversation_id: str, timer_key: str) -> str:
    """Internal: where a call's deadline timer is kept (one schedule per subject)."""
    return f"{PREFIX}.timers.{conversation_id}.{timer_key}"


def deadline(conversation_id: str) -> str:
    """Internal: nats-server publishes a call's work item here when its deadline passes."""
    return f"{PREFIX}.deadline.{conversation_id}"


def token_at(subject: str, index: int) -> str | None:
    """The subject token at ``index`` (e.g. the conversation id at 2), if present."""
    parts = subject.split(".")
    return parts[index] if len(parts) > index else None


def ready(service: str) -> str:
    """Internal: a service announces (core NATS) that it is serving."""
    return f"{PREFIX}.ready.{service}"
