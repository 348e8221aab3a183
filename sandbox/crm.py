"""CRM sandbox: the HubSpot CRM v3 subset dealflow uses (deals, notes, tasks).

The worker updates the CRM over plain REST, so this is a REST server with HubSpot's paths,
shapes and rules rather than a mock of a client library:

- `POST /crm/v3/objects/{deals|notes|tasks}`, `GET`/`PATCH /crm/v3/objects/{type}/{id}`
  with `?idProperty=dealflow_deal_id` (the deal's external id, a unique property), and
  `POST /crm/v3/objects/deals/batch/upsert` (HubSpot's real upsert);
- objects come back as `{"id", "properties", "createdAt", "updatedAt", "archived"}`, every
  property value a string; errors as `{"status": "error", "message", "correlationId",
  "category"}` (VALIDATION_ERROR, OBJECT_NOT_FOUND, CONFLICT, INVALID_AUTHENTICATION);
- properties are checked as HubSpot checks them: unknown names, numbers, dates, and
  enumerations (pipeline/dealstage, task status/priority/type) are refused with a 400, so a
  client bug shows up here and not first in production;
- notes and tasks are associated to a deal on create with HubSpot's default association
  types (note→deal 214, task→deal 216).

One deliberate extension: `PATCH /crm/v3/objects/deals/{value}?idProperty=dealflow_deal_id`
creates the deal when none has that value (`patch_upserts=True`, the default). Real HubSpot
answers that PATCH with 404; production code that must upsert should use `batch/upsert`,
which behaves the same here and there.

Control: `GET /_sandbox/crm/deals/{external_id}` is the deal (by its CRM id, else by its
dealflow id) with its notes, tasks and a history of every property change. State is kept in
`<state_dir>/crm.json`, rewritten atomically on every change.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel

from sandbox.files import load_state, save_state

logger = logging.getLogger(__name__)

STATE_FILENAME = "crm.json"
EXTERNAL_ID_PROPERTY = "dealflow_deal_id"

ObjectType = Literal["deals", "notes", "tasks"]
OBJECT_TYPES: tuple[ObjectType, ...] = ("deals", "notes", "tasks")

# HubSpot's default deal pipeline and its stage ids.
DEFAULT_PIPELINES: dict[str, tuple[str, ...]] = {
    "default": (
        "appointmentscheduled",
        "qualifiedtobuy",
        "presentationscheduled",
        "decisionmakerboughtin",
        "contractsent",
        "closedwon",
        "closedlost",
    )
}

WRITABLE_PROPERTIES: dict[ObjectType, frozenset[str]] = {
    "deals": frozenset(
        {
            "dealname",
            "amount",
            "closedate",
            "dealstage",
            "pipeline",
            "dealtype",
            "description",
            "deal_currency_code",
            "hubspot_owner_id",
            "closed_won_reason",
            "closed_lost_reason",
            "hs_priority",
            EXTERNAL_ID_PROPERTY,
        }
    ),
    "notes": frozenset({"hs_note_body", "hs_timestamp", "hubspot_owner_id", "hs_attachment_ids"}),
    "tasks": frozenset(
        {
            "hs_task_subject",
            "hs_task_body",
            "hs_task_status",
            "hs_task_priority",
            "hs_task_type",
            "hs_timestamp",
            "hubspot_owner_id",
        }
    ),
}
# What a GET returns when the caller does not ask for `properties` (as HubSpot does).
DEFAULT_READ_PROPERTIES: dict[ObjectType, frozenset[str]] = {
    "deals": frozenset({"dealname", "amount", "closedate", "dealstage", "pipeline"}),
    "notes": frozenset({"hs_note_body", "hs_timestamp"}),
    "tasks": frozenset(
        {"hs_task_subject", "hs_task_body", "hs_task_status", "hs_task_priority", "hs_timestamp"}
    ),
}
REQUIRED_ON_CREATE: dict[ObjectType, tuple[str, ...]] = {
    "deals": ("dealname", "dealstage"),
    "notes": ("hs_timestamp",),
    "tasks": ("hs_timestamp",),
}
ENUMERATIONS: dict[str, tuple[str, ...]] = {
    "hs_task_status": ("NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"),
    "hs_task_priority": ("NONE", "LOW", "MEDIUM", "HIGH"),
    "hs_task_type": ("TODO", "CALL", "EMAIL"),
}
NUMBER_PROPERTIES = frozenset({"amount"})
DATE_PROPERTIES = frozenset({"closedate", "hs_timestamp"})
# HubSpot-defined association type ids, from the object being created to a deal.
ASSOCIATION_TO_DEAL: dict[ObjectType, int] = {"notes": 214, "tasks": 216}
UNIQUE_PROPERTIES = frozenset({EXTERNAL_ID_PROPERTY})
_FIRST_ID = 10_000_000_001


class CrmError(Exception):
    """An error as HubSpot answers it: `{"status": "error", "message", "category", ...}`."""

    def __init__(
        self,
        status_code: int,
        category: str,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.category = category
        self.message = message
        self.errors = errors
        self.context = context

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {
            "status": "error",
            "message": self.message,
            "correlationId": str(uuid.uuid4()),
            "category": self.category,
        }
        if self.errors:
            body["errors"] = self.errors
        if self.context:
            body["context"] = self.context
        return JSONResponse(body, status_code=self.status_code)


def _invalid(problems: list[dict[str, Any]]) -> CrmError:
    """HubSpot's 400 for bad property values: the list is repeated inside the message."""
    return CrmError(
        400,
        "VALIDATION_ERROR",
        "Property values were not valid: " + json.dumps(problems),
        errors=[{"message": p["message"], "code": p["error"]} for p in problems],
    )


def _not_found(object_id: str) -> CrmError:
    return CrmError(
        404,
        "OBJECT_NOT_FOUND",
        "Object not found.  objectId are usually numeric.",
        context={"id": [object_id]},
    )


class _CrmRoute(APIRoute):
    """Answers this module's errors in HubSpot's shape, for its own routes only (the app is
    shared with other sandboxes)."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except CrmError as error:
                return error.response()

        return handler


def hubspot_time(moment: datetime) -> str:
    """HubSpot's timestamp format: UTC with milliseconds and `Z`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse_datetime(value: str) -> datetime | None:
    """HubSpot date(time) input: ISO 8601 (date or date-time) or epoch milliseconds."""
    text = value.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# --- persisted state --------------------------------------------------------------------


class CrmObject(BaseModel):
    id: str
    object_type: ObjectType
    properties: dict[str, str | None]
    created_at: AwareDatetime
    updated_at: AwareDatetime
    archived: bool = False
    # object type -> ids, kept in both directions
    associations: dict[str, list[str]] = {}


class Change(BaseModel):
    """One property change, as the control API's history shows it."""

    at: AwareDatetime
    object_type: ObjectType
    object_id: str
    property: str
    old: str | None
    new: str | None
    source: Literal["CREATE", "UPDATE", "UPSERT"]


class _State(BaseModel):
    next_id: int = _FIRST_ID
    objects: dict[str, CrmObject] = {}
    history: list[Change] = []


class CrmStore:
    """Deals, notes and tasks with HubSpot's validation, and the change history.

    Every method takes one lock and persists before returning, so a caller that got an
    answer knows the change survives a restart.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        access_token: str | None = None,
        pipelines: Mapping[str, Iterable[str]] | None = None,
        extra_properties: Mapping[ObjectType, Iterable[str]] | None = None,
        patch_upserts: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / STATE_FILENAME
        self.access_token = access_token
        self.pipelines = {
            name: tuple(stages) for name, stages in (pipelines or DEFAULT_PIPELINES).items()
        }
        self.writable = {
            kind: WRITABLE_PROPERTIES[kind] | frozenset((extra_properties or {}).get(kind, ()))
            for kind in OBJECT_TYPES
        }
        self.patch_upserts = patch_upserts
        self._lock = threading.RLock()
        self._state = self._load()

    def _load(self) -> _State:
        return load_state(self.path, _State)

    def _save(self) -> None:
        save_state(self.path, self._state)

    # auth

    def authenticate(self, authorization: str | None) -> None:
        """Any non-empty Bearer token, or exactly `access_token` when one is configured."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise CrmError(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 "
                "authentication and you can find more details at "
                "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            )
        if self.access_token is not None and token != self.access_token:
            raise CrmError(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials are not valid: the access token is not recognised.",
            )

    # validation

    def _clean(
        self, kind: ObjectType, raw: Any, *, current: Mapping[str, str | None] | None = None
    ) -> dict[str, str | None]:
        """Validate and normalise a `properties` object; raise HubSpot's 400 listing every
        problem. `current` is the stored object, for checks that span properties."""
        if not isinstance(raw, dict):
            raise CrmError(400, "VALIDATION_ERROR", "properties must be an object")
        problems: list[dict[str, Any]] = []
        cleaned: dict[str, str | None] = {}
        for name, value in raw.items():
            if name not in self.writable[kind]:
                problems.append(
                    {
                        "isValid": False,
                        "message": f'Property "{name}" does not exist',
                        "error": "PROPERTY_DOESNT_EXIST",
                        "name": name,
                    }
                )
                continue
            if value is None or value == "":
                cleaned[name] = None  # HubSpot clears a property set to ""
                continue
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                problems.append(_problem(name, f"{value!r} is not a valid value", "INVALID_VALUE"))
                continue
            text = str(value).strip()
            if name in NUMBER_PROPERTIES:
                try:
                    number = Decimal(text)
                except InvalidOperation:
                    problems.append(
                        _problem(name, f"{text} was not a valid number.", "INVALID_FLOAT")
                    )
                    continue
                if not number.is_finite():
                    problems.append(
                        _problem(name, f"{text} was not a valid number.", "INVALID_FLOAT")
                    )
                    continue
            elif name in DATE_PROPERTIES:
                moment = _parse_datetime(text)
                if moment is None:
                    problems.append(
                        _problem(name, f"{text} is not a valid date or timestamp.", "INVALID_DATE")
                    )
                    continue
                text = hubspot_time(moment)
            elif name in ENUMERATIONS and text not in ENUMERATIONS[name]:
                problems.append(_option_problem(name, text, ENUMERATIONS[name]))
                continue
            cleaned[name] = text
        if kind == "deals":
            merged = {**(current or {}), **cleaned}
            pipeline = merged.get("pipeline") or "default"
            if "pipeline" in cleaned and pipeline not in self.pipelines:
                problems.append(_option_problem("pipeline", pipeline, tuple(self.pipelines)))
            elif ("dealstage" in cleaned or "pipeline" in cleaned) and merged.get("dealstage"):
                stages = self.pipelines.get(pipeline, ())
                if merged["dealstage"] not in stages:
                    problems.append(_option_problem("dealstage", str(merged["dealstage"]), stages))
        if problems:
            raise _invalid(problems)
        return cleaned

    # reads

    def _get(self, kind: ObjectType, object_id: str, id_property: str | None) -> CrmObject | None:
        """The stored object by id or by a unique property (lock held)."""
        if id_property in (None, "", "hs_object_id"):
            found = self._state.objects.get(object_id)
            return found if found is not None and found.object_type == kind else None
        if id_property not in UNIQUE_PROPERTIES or kind != "deals":
            raise CrmError(
                400,
                "VALIDATION_ERROR",
                f"idProperty {id_property!r} is not a unique property of {kind}",
            )
        for candidate in self._state.objects.values():
            if candidate.object_type == kind and candidate.properties.get(id_property) == object_id:
                return candidate
        return None

    def get(self, kind: ObjectType, object_id: str, *, id_property: str | None = None) -> CrmObject:
        with self._lock:
            found = self._get(kind, object_id, id_property)
            if found is None or found.archived:
                raise _not_found(object_id)
            return found.model_copy(deep=True)

    def control_view(self, external_id: str) -> dict[str, Any] | None:
        """A deal by the CRM's own id (what a rep gives dealflow as the deal's ``external_id``)
        or else by its dealflow id, with its notes, tasks and property history."""
        with self._lock:
            deal = self._get("deals", external_id, None) or self._get(
                "deals", external_id, EXTERNAL_ID_PROPERTY
            )
            if deal is None:
                return None
            related = {
                kind: [
                    self._state.objects[i].model_copy(deep=True)
                    for i in deal.associations.get(kind, [])
                    if i in self._state.objects
                ]
                for kind in ("notes", "tasks")
            }
            history = [
                change.model_dump(mode="json")
                for change in self._state.history
                if change.object_id == deal.id
            ]
            return {
                "deal": _wire(deal, properties=None, with_associations=True),
                "notes": [_wire(n, properties=None) for n in related["notes"]],
                "tasks": [_wire(t, properties=None) for t in related["tasks"]],
                "history": history,
            }

    def deals(self) -> list[CrmObject]:
        with self._lock:
            return [
                o.model_copy(deep=True)
                for o in self._state.objects.values()
                if o.object_type == "deals"
            ]

    # writes

    def _record(
        self,
        obj: CrmObject,
        changes: Mapping[str, str | None],
        source: Literal["CREATE", "UPDATE", "UPSERT"],
        now: datetime,
    ) -> None:
        for name, new in changes.items():
            old = obj.properties.get(name)
            if old != new or source == "CREATE":
                self._state.history.append(
                    Change(
                        at=now,
                        object_type=obj.object_type,
                        object_id=obj.id,
                        property=name,
                        old=None if source == "CREATE" else old,
                        new=new,
                        source=source,
                    )
                )
            obj.properties[name] = new

    def _check_unique(
        self, kind: ObjectType, properties: Mapping[str, str | None], own_id: str | None
    ) -> None:
        for name in UNIQUE_PROPERTIES & properties.keys():
            value = properties[name]
            if value is None or kind != "deals":
                continue
            existing = self._get(kind, value, name)
            if existing is not None and existing.id != own_id:
                raise CrmError(
                    409,
                    "CONFLICT",
                    f"A deal with {name}={value} already exists. Existing ID: {existing.id}",
                )

    def _associations(self, kind: ObjectType, raw: Any) -> list[str]:
        """Deal ids from HubSpot's create-time `associations` array, checked."""
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise CrmError(400, "VALIDATION_ERROR", "associations must be an array")
        deal_ids: list[str] = []
        for index, item in enumerate(raw):
            to = item.get("to") if isinstance(item, dict) else None
            types = item.get("types") if isinstance(item, dict) else None
            target = str(to.get("id", "")) if isinstance(to, dict) else ""
            if not target or not isinstance(types, list) or not types:
                raise CrmError(
                    400,
                    "VALIDATION_ERROR",
                    f"associations[{index}] needs to.id and a non-empty types list",
                )
            expected = ASSOCIATION_TO_DEAL.get(kind)
            for association_type in types:
                category = (
                    association_type.get("associationCategory")
                    if isinstance(association_type, dict)
                    else None
                )
                type_id = (
                    association_type.get("associationTypeId")
                    if isinstance(association_type, dict)
                    else None
                )
                if category != "HUBSPOT_DEFINED" or type_id != expected:
                    raise CrmError(
                        400,
                        "VALIDATION_ERROR",
                        f"associations[{index}]: the sandbox supports {kind}→deal only "
                        f"(HUBSPOT_DEFINED, associationTypeId {expected}), got "
                        f"{category} {type_id}",
                    )
            deal = self._state.objects.get(target)
            if deal is None or deal.object_type != "deals" or deal.archived:
                raise CrmError(
                    400,
                    "VALIDATION_ERROR",
                    f"associations[{index}]: no deal with id {target}",
                )
            deal_ids.append(target)
        return deal_ids

    def _insert(
        self,
        kind: ObjectType,
        properties: dict[str, str | None],
        deal_ids: list[str],
        source: Literal["CREATE", "UPSERT"],
    ) -> CrmObject:
        missing = [name for name in REQUIRED_ON_CREATE[kind] if not properties.get(name)]
        if missing:
            raise _invalid(
                [_problem(name, f"{name} is required", "REQUIRED_PROPERTY") for name in missing]
            )
        self._check_unique(kind, properties, None)
        now = datetime.now(UTC)
        object_id = str(self._state.next_id)
        self._state.next_id += 1
        defaults: dict[str, str | None] = {}
        if kind == "deals":
            defaults["pipeline"] = "default"
        if kind == "tasks":
            defaults["hs_task_status"] = "NOT_STARTED"
        obj = CrmObject(
            id=object_id,
            object_type=kind,
            properties={},
            created_at=now,
            updated_at=now,
        )
        self._record(
            obj, {**defaults, **properties}, "CREATE" if source == "CREATE" else "UPSERT", now
        )
        obj.properties["hs_object_id"] = object_id
        obj.properties["createdate"] = hubspot_time(now)
        obj.properties["hs_lastmodifieddate"] = hubspot_time(now)
        for deal_id in deal_ids:
            obj.associations.setdefault("deals", []).append(deal_id)
            self._state.objects[deal_id].associations.setdefault(kind, []).append(object_id)
        self._state.objects[object_id] = obj
        return obj

    def create(self, kind: ObjectType, body: dict[str, Any]) -> CrmObject:
        """POST /crm/v3/objects/{kind}."""
        with self._lock:
            properties = self._clean(kind, body.get("properties", {}))
            deal_ids = self._associations(kind, body.get("associations"))
            obj = self._insert(kind, properties, deal_ids, "CREATE")
            self._save()
            return obj.model_copy(deep=True)

    def _apply(
        self, obj: CrmObject, properties: dict[str, str | None], source: Literal["UPDATE", "UPSERT"]
    ) -> None:
        self._check_unique(obj.object_type, properties, obj.id)
        now = datetime.now(UTC)
        self._record(obj, properties, source, now)
        obj.updated_at = now
        obj.properties["hs_lastmodifieddate"] = hubspot_time(now)

    def update(
        self, kind: ObjectType, object_id: str, body: dict[str, Any], *, id_property: str | None
    ) -> tuple[CrmObject, bool]:
        """PATCH; with `idProperty` and `patch_upserts` a missing deal is created.

        Returns (object, created).
        """
        with self._lock:
            found = self._get(kind, object_id, id_property)
            if found is not None and found.archived:
                found = None
            if found is None:
                if not (
                    self.patch_upserts and kind == "deals" and id_property in UNIQUE_PROPERTIES
                ):
                    raise _not_found(object_id)
                properties = self._clean(kind, body.get("properties", {}))
                if properties.get(id_property, object_id) != object_id:
                    raise CrmError(
                        400, "VALIDATION_ERROR", f"{id_property} in the body differs from the path"
                    )
                properties[str(id_property)] = object_id
                obj = self._insert(kind, properties, [], "UPSERT")
                self._save()
                return obj.model_copy(deep=True), True
            working = found.model_copy(deep=True)
            properties = self._clean(kind, body.get("properties", {}), current=working.properties)
            self._apply(working, properties, "UPDATE")
            self._state.objects[working.id] = working
            self._save()
            return working.model_copy(deep=True), False

    def batch_upsert(self, kind: ObjectType, body: dict[str, Any]) -> list[tuple[CrmObject, bool]]:
        """POST /crm/v3/objects/{kind}/batch/upsert: all inputs succeed or none is applied."""
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise CrmError(400, "VALIDATION_ERROR", "inputs must be a non-empty array")
        with self._lock:
            snapshot = self._state.model_copy(deep=True)
            try:
                results: list[tuple[CrmObject, bool]] = []
                for index, item in enumerate(inputs):
                    if not isinstance(item, dict):
                        raise CrmError(
                            400, "VALIDATION_ERROR", f"inputs[{index}] must be an object"
                        )
                    id_property = item.get("idProperty")
                    value = str(item.get("id", ""))
                    if id_property not in UNIQUE_PROPERTIES or not value:
                        raise CrmError(
                            400,
                            "VALIDATION_ERROR",
                            f"inputs[{index}] needs id and a unique idProperty "
                            f"({', '.join(sorted(UNIQUE_PROPERTIES))})",
                        )
                    found = self._get(kind, value, id_property)
                    if found is None:
                        properties = self._clean(kind, item.get("properties", {}))
                        properties[id_property] = value
                        results.append((self._insert(kind, properties, [], "UPSERT"), True))
                    else:
                        properties = self._clean(
                            kind, item.get("properties", {}), current=found.properties
                        )
                        self._apply(found, properties, "UPSERT")
                        results.append((found, False))
            except CrmError:
                self._state = snapshot
                raise
            self._save()
            return [(obj.model_copy(deep=True), new) for obj, new in results]


def _problem(name: str, message: str, error: str) -> dict[str, Any]:
    return {"isValid": False, "message": message, "error": error, "name": name}


def _option_problem(name: str, value: str, allowed: Iterable[str]) -> dict[str, Any]:
    return _problem(
        name,
        f"{value} was not one of the allowed options: [{', '.join(allowed)}]",
        "INVALID_OPTION",
    )


def _wire(
    obj: CrmObject, *, properties: Iterable[str] | None, with_associations: bool = False
) -> dict[str, Any]:
    """HubSpot's object shape. `properties=None` returns them all (control API)."""
    base = {"hs_object_id", "createdate", "hs_lastmodifieddate"}
    if properties is None:
        shown = dict(obj.properties)
    else:
        # Requested properties without a value come back as null, as HubSpot returns them.
        shown = {name: obj.properties.get(name) for name in sorted(base | set(properties))}
    data: dict[str, Any] = {
        "id": obj.id,
        "properties": shown,
        "createdAt": hubspot_time(obj.created_at),
        "updatedAt": hubspot_time(obj.updated_at),
        "archived": obj.archived,
    }
    if with_associations:
        data["associations"] = {
            kind: {
                "results": [
                    {"id": other, "type": f"{obj.object_type[:-1]}_to_{kind[:-1]}"} for other in ids
                ]
            }
            for kind, ids in obj.associations.items()
            if ids
        }
    return data


def _read_properties(kind: ObjectType, requested: str | None) -> set[str]:
    requested_names = {p.strip() for p in (requested or "").split(",") if p.strip()}
    return requested_names or set(DEFAULT_READ_PROPERTIES[kind])


def _object_type(value: str) -> ObjectType:
    for kind in OBJECT_TYPES:
        if value == kind:
            return kind
    raise CrmError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {value}")


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError as error:
        raise CrmError(400, "VALIDATION_ERROR", "Invalid input JSON on line 1") from error
    if not isinstance(data, dict):
        raise CrmError(400, "VALIDATION_ERROR", "The request body must be a JSON object")
    return data


def create_crm_router(store: CrmStore) -> APIRouter:
    """HubSpot's `/crm/v3/objects/...` subset, Bearer-authenticated."""
    router = APIRouter(prefix="/crm/v3/objects", tags=["sandbox: crm"], route_class=_CrmRoute)

    @router.post("/{object_type}", status_code=201)
    async def create_object(object_type: str, request: Request) -> JSONResponse:
        """Create a deal, note or task (notes and tasks may be associated to a deal)."""
        store.authenticate(request.headers.get("authorization"))
        kind = _object_type(object_type)
        obj = store.create(kind, await _json_body(request))
        return JSONResponse(_wire(obj, properties=None), status_code=201)

    @router.post("/{object_type}/batch/upsert")
    async def batch_upsert(object_type: str, request: Request) -> JSONResponse:
        """HubSpot's upsert by a unique property; each result says whether it is `new`."""
        store.authenticate(request.headers.get("authorization"))
        kind = _object_type(object_type)
        started = hubspot_time(datetime.now(UTC))
        results = store.batch_upsert(kind, await _json_body(request))
        return JSONResponse(
            {
                "status": "COMPLETE",
                "results": [{**_wire(obj, properties=None), "new": new} for obj, new in results],
                "startedAt": started,
                "completedAt": hubspot_time(datetime.now(UTC)),
            }
        )

    @router.get("/{object_type}/{object_id}")
    async def get_object(
        object_type: str,
        object_id: str,
        request: Request,
        idProperty: str | None = None,  # noqa: N803 - HubSpot's query parameter name
        properties: str | None = None,
        associations: str | None = None,
    ) -> JSONResponse:
        """Read by id or `idProperty`; `properties` picks the properties returned."""
        store.authenticate(request.headers.get("authorization"))
        kind = _object_type(object_type)
        obj = store.get(kind, object_id, id_property=idProperty)
        data = _wire(
            obj, properties=_read_properties(kind, properties), with_associations=bool(associations)
        )
        if associations:
            wanted = {a.strip() for a in associations.split(",")}
            data["associations"] = {k: v for k, v in data["associations"].items() if k in wanted}
        return JSONResponse(data)

    @router.patch("/{object_type}/{object_id}")
    async def update_object(
        object_type: str,
        object_id: str,
        request: Request,
        idProperty: str | None = None,  # noqa: N803 - HubSpot's query parameter name
    ) -> JSONResponse:
        """Update by id or `idProperty` (creating a missing deal; see the module docstring)."""
        store.authenticate(request.headers.get("authorization"))
        kind = _object_type(object_type)
        obj, created = store.update(
            kind, object_id, await _json_body(request), id_property=idProperty
        )
        # 200 even when the sandbox created the deal: PATCH never answers 201 at HubSpot.
        logger.debug("PATCH %s/%s created=%s", kind, object_id, created)
        return JSONResponse(_wire(obj, properties=None))

    return router


def create_control_router(store: CrmStore) -> APIRouter:
    router = APIRouter(prefix="/_sandbox/crm", tags=["sandbox: crm"], route_class=_CrmRoute)

    @router.get("/deals")
    async def list_deals() -> JSONResponse:
        """Every deal, with all properties."""
        return JSONResponse({"deals": [_wire(d, properties=None) for d in store.deals()]})

    @router.get("/deals/{external_id}")
    async def get_deal(external_id: str) -> JSONResponse:
        """The deal whose CRM id (else whose dealflow_deal_id) is `external_id`, its notes,
        tasks and history."""
        view = store.control_view(external_id)
        if view is None:
            raise _not_found(external_id)
        return JSONResponse(view)

    return router


def install(app: FastAPI, state_dir: Path, **options: Any) -> CrmStore:
    """Add the CRM sandbox (HubSpot REST subset and control API) to `app`; return its store.

    `options` go to `CrmStore`: access_token (None: any non-empty Bearer token),
    pipelines, extra_properties, patch_upserts.
    """
    store = CrmStore(Path(state_dir), **options)
    app.include_router(create_crm_router(store))
    app.include_router(create_control_router(store))
    return store
