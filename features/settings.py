"""Every ``PERSUADE_*`` environment variable: its name, type, default and meaning, written once.

:class:`Settings` (pydantic-settings) is the one reader of ``PERSUADE_*`` variables; the
CLI, training, batch scoring and the HTTP service take what they need from it
(``tests/test_settings.py`` fails on any other read). A variable's name is ``PERSUADE_``
and its field's name in capitals (``threads`` is ``PERSUADE_THREADS``).

``Settings()`` and ``Settings.from_env()`` read the process environment;
``Settings.from_env(mapping)`` reads that mapping only (a test, a child process's
environment). An empty variable counts as unset. A bad value raises
:class:`SettingsError` naming the variable, e.g. ``PERSUADE_WORKERS must be a whole number
of at least 1, got 'x'``. Secrets (the phone-hash key, the API keys) are ``SecretStr``:
never shown by ``repr``, ``str`` or an error.

The defaults other modules share are the constants below (the consent rules, the run
config and the CLI options take the prerecorded-call cap from here). This module imports
nothing from the project, so every module may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import AliasGenerator, AwareDatetime, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

PREFIX = "PERSUADE_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_THREADS = 2  # the cores of the reference machine: the same in training and serving
DEFAULT_WORKERS = 2  # a crashed worker costs a retry, not an outage
DEFAULT_RELOAD_SECONDS = 30.0
BATCHING_STRATEGIES = ("queue", "bentoml")  # the first is the default
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024  # a 10,000-voter request is a few MB
DEFAULT_CONSENT_MAX_AGE_HOURS = 24.0
DEFAULT_PRERECORDED_CAP = 3  # prerecorded or AI-voice calls a landline without consent may get ...
DEFAULT_PRERECORDED_WINDOW_DAYS = 30  # ... per this many days (no variable: consent.cap_window_days of a run)

_EXPLICIT_ENV: ContextVar[Mapping[str, str] | None] = ContextVar("persuade_settings_env", default=None)


class SettingsError(ValueError):
    """A ``PERSUADE_*`` variable with a value that cannot be used (names the variable; secrets not shown)."""


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k: v for k, v in self._env.items() if not (self.env_ignore_empty and v == "")}


class Settings(BaseSettings):
    """The ``PERSUADE_*`` variables, typed and validated (see the module docstring).

    Examples
    --------
    >>> Settings.from_env({"PERSUADE_WORKERS": "3"}).workers
    3
    >>> Settings.variable("hash_key")
    'PERSUADE_HASH_KEY'
    """

    model_config = SettingsConfigDict(
        alias_generator=AliasGenerator(validation_alias=lambda name: PREFIX + name.upper()),
        validate_by_name=True, case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True,
        hide_input_in_errors=True,  # pydantic's own messages never show a value (it may be a secret)
    )

    home: Path = Field(PROJECT_ROOT, description="Folder of mlruns/ (the embedded MLflow store), reports/, "
                       "consent_ledger/ and proofs/; default the project folder.")
    threads: int = Field(DEFAULT_THREADS, ge=1, description="LightGBM threads of training, the balance check and "
                         "scoring (small scoring batches use one).")
    workers: int = Field(DEFAULT_WORKERS, ge=1, description="Worker processes of the HTTP service, each with its "
                         "own model copy.")
    model_uri: str | None = Field(None, description="Model the service serves; an @alias is followed when it "
                                  "moves. No default: a service without it stays unready and says how to name one.")
    reload_seconds: float = Field(DEFAULT_RELOAD_SECONDS, ge=0, description="Seconds between checks of the model "
                                  "URI; 0: only on POST /admin/reload.")
    batching: Literal[BATCHING_STRATEGIES] = Field(BATCHING_STRATEGIES[0], description="How the service batches "
                                                   "small requests: queue or bentoml.")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1, description="Larger request bodies are refused (413) "
                                "before parsing.")
    tracing: bool = Field(False, description="Keep BentoML's OpenTelemetry tracing on.")
    api_keys: SecretStr | None = Field(None, description="Scoring keys, comma-separated.")
    api_keys_file: Path | None = Field(None, description="File of sha256 digests of scoring keys, one per line.")
    admin_keys: SecretStr | None = Field(None, description="Admin keys (/admin/*; they may also score), "
                                         "comma-separated.")
    admin_keys_file: Path | None = Field(None, description="File of sha256 digests of admin keys.")
    consent_keys: SecretStr | None = Field(None, description="Consent-event keys (/consent/* only), comma-separated.")
    consent_keys_file: Path | None = Field(None, description="File of sha256 digests of consent-event keys.")
    hash_key: SecretStr | None = Field(None, description="HMAC key of phone hashes (16+ characters), the same "
                                       "wherever hashes are joined.")
    audit_log: Path | None = Field(None, description="Also append the service's audit lines to this file.")
    consent_table: Path | None = Field(None, description="Consent table file the service applies, re-read when "
                                       "it changes.")
    consent_as_of: AwareDatetime | None = Field(None, description="Replay only: take consents as of this instant "
                                                "(with a zone); default now.")
    consent_timezone: str | None = Field(None, description="IANA time zone of consent timestamps written without "
                                         "one; default refuse them.")
    consent_max_age_hours: float = Field(DEFAULT_CONSENT_MAX_AGE_HOURS, ge=0, description="An older consent table "
                                         "file suppresses automated contact; 0: no limit.")
    consent_ledger: str | None = Field(None, description="Consent ledger: a SQLite file or SQLAlchemy URL; default "
                                       "<home>/consent_ledger/ledger.db.")
    prerecorded_cap: int = Field(DEFAULT_PRERECORDED_CAP, ge=0, description="Prerecorded or AI-voice calls a "
                                 f"landline without consent may get per {DEFAULT_PRERECORDED_WINDOW_DAYS} days.")
    calling_hours: str | None = Field(None, description="Calling window HH:MM-HH:MM in the voter's local time; "
                                      "default the TCPA's 08:00-21:00 (narrow only).")

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError("; ".join(_problem(type(self), error) for error in exc.errors())) from None

    @field_validator("*", mode="before")
    @classmethod
    def _strip(cls, value: Any, info: ValidationInfo) -> Any:
        """Values without surrounding blanks, a blank value as unset; a secret as it is (its bytes are the key)."""
        field = cls.model_fields[info.field_name]
        if not isinstance(value, str) or _is_secret(field.annotation):
            return value
        return value.strip() or field.get_default()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment (the explicit mapping of :meth:`from_env`); no files."""
        env = _EXPLICIT_ENV.get()
        return init_settings, env_settings if env is None else _MappingSource(settings_cls, env)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings of ``env`` only (the process environment when None).

        Raises
        ------
        SettingsError
            A variable with a bad value (the message names it and shows no secret).
        """
        token = _EXPLICIT_ENV.set(env)
        try:
            return cls()
        finally:
            _EXPLICIT_ENV.reset(token)

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of a field (``"threads"`` -> ``"PERSUADE_THREADS"``)."""
        return cls.model_fields[field].validation_alias

    def key_list(self, field: str) -> list[str]:
        """The comma-separated keys of ``api_keys``, ``admin_keys`` or ``consent_keys`` (blanks dropped)."""
        keys: SecretStr | None = getattr(self, field)
        return [k.strip() for k in keys.get_secret_value().split(",") if k.strip()] if keys is not None else []


def _problem(cls: type[Settings], error: Mapping[str, Any]) -> str:
    """``"PERSUADE_X must be ..., got '...'"`` for one validation error (a secret's value is not shown)."""
    name = str(error["loc"][0]) if error["loc"] else "?"
    field = next((f for f, info in cls.model_fields.items() if name in (f, info.validation_alias)), None)
    if field is None:
        return f"{PREFIX}*: {error['msg']}"
    info = cls.model_fields[field]
    got = "a value that is not shown" if _is_secret(info.annotation) else repr(error.get("input"))
    return f"{cls.variable(field)} must be {_expected(info.annotation, info.metadata)}, got {got}"


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _expected(annotation: Any, metadata: list[Any]) -> str:
    """What a field accepts, in words."""
    kinds = [a for a in (get_args(annotation) or (annotation,)) if a is not type(None)]
    bound = next((f"at least {m.ge:g}" for m in metadata if getattr(m, "ge", None) is not None), "")
    kind = kinds[0] if kinds else annotation
    if kind is int:
        return f"a whole number of {bound}" if bound else "a whole number"
    if kind is float:
        return f"a number of {bound}" if bound else "a number"
    if kind is bool:
        return "true or false (1/0, yes/no, on/off)"
    if getattr(annotation, "__origin__", None) is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(annotation))
    if kind is AwareDatetime:
        return "an ISO 8601 time with a zone (e.g. 2026-11-03T09:00:00-05:00 or ...Z)"
    if kind is Path:
        return "a path"
    return "text" if kind in (str, SecretStr) else f"a {getattr(kind, '__name__', kind)}"
