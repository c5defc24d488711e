"""The REST error shape both HTTP services use: ``{"error": {code, message, details}}``."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, AwareDatetime, Field, ValidationError
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException


class ApiError(Exception):
    """A caller mistake (4xx) or a known failure, with a message a person can act on."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def in_utc_range(value: datetime) -> datetime:
    """A time that can be converted to UTC, as every store does before comparing.

    ``0001-01-01T00:00:00+00:01`` parses, but in UTC it is before year 1: the
    conversion raises ``OverflowError`` deep in a query, which is no storage
    outage. A time without an offset is read as UTC, so it always fits.
    """
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise PydanticCustomError(
                "datetime_out_of_range",
                "the date is out of range: {value} in UTC is outside "
                "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z",
                {"value": value.isoformat()},
            ) from None
    return value


# Times in requests (query parameters or bodies): out-of-range ones are a 422 naming the field.
def well_formed_text(value: str) -> str:
    """Text that can be stored and sent: a JSON escape may carry a lone surrogate,
    which no UTF-8 encoder takes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "the text holds a lone surrogate (an unpaired \\ud800-\\udfff escape)"
        ) from None
    return value


# A row id as SQL stores it (a signed 64-bit integer): larger ones are a 422, not a 500.
RowId = Annotated[int, Field(ge=1, le=2**63 - 1)]
Utf8Text = Annotated[str, AfterValidator(well_formed_text)]
UtcDatetime = Annotated[datetime, AfterValidator(in_utc_range)]
AwareUtcDatetime = Annotated[AwareDatetime, AfterValidator(in_utc_range)]


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def describe_validation(exc: ValidationError | RequestValidationError) -> tuple[str, Any]:
    """One readable sentence naming the fields, plus pydantic's errors as details."""
    errors = exc.errors()
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "(document)"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    details = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
    return "; ".join(parts), details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = describe_validation(exc)
        return JSONResponse(error_body("invalid_request", message, details), 422)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "http_error"
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code)
