"""The workplace: a small company database and the tools that read and change it. Pure, no I/O.

`fresh_state()` is the starting database every rollout gets (invented people, customers and
orders). Each tool is a function `(state, args) -> result` registered in `TOOLS` with its argument
model; a tool that cannot do what was asked raises `ToolError`, whose message the model sees.
`comparable(state)` is the view used for grading: created records are compared without their
generated ids and text is compared case- and whitespace-insensitively, so any sequence of calls
that reaches the goal state counts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

JSONDict = dict[str, Any]
USER_EMAIL = "alex.doe@acme.example"
DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"  # [0-9], not \d: the local model's grammar converter rejects \d
TIME = r"^[0-9]{2}:[0-9]{2}$"
OrderStatus = Literal["pending", "shipped", "delivered", "cancelled", "refunded"]
CustomerStatus = Literal["lead", "active", "inactive"]
CustomerTier = Literal["standard", "gold", "platinum"]
# Records the model creates get ids we cannot predict, so they are compared by content only.
CREATED_TABLES = ("events", "sent_emails")


class ToolError(Exception):
    """The call cannot be carried out as asked; the message goes back to the model."""


def fresh_state() -> JSONDict:
    employees = [
        ("e1", "Alex Doe", "Operations", USER_EMAIL),
        ("e2", "Priya Shah", "Finance", "priya.shah@acme.example"),
        ("e3", "Marco Rossi", "Procurement", "marco.rossi@acme.example"),
        ("e4", "Hannah Lee", "Design", "hannah.lee@acme.example"),
        ("e5", "Tobias Berg", "Sales", "tobias.berg@acme.example"),
        ("e6", "Amina Okafor", "Sales", "amina.okafor@acme.example"),
        ("e7", "Priya Natarajan", "Engineering", "priya.natarajan@acme.example"),
    ]
    events = [
        ("ev-1", "Vendor sync", "2026-07-13", "09:00", 30, [USER_EMAIL, "marco.rossi@acme.example"]),
        ("ev-2", "Design review", "2026-07-15", "14:00", 60, [USER_EMAIL, "hannah.lee@acme.example"]),
        (
            "ev-3",
            "Sales weekly",
            "2026-07-14",
            "11:00",
            45,
            [USER_EMAIL, "tobias.berg@acme.example", "amina.okafor@acme.example"],
        ),
        ("ev-4", "1:1 with Priya", "2026-07-17", "16:00", 30, [USER_EMAIL, "priya.shah@acme.example"]),
    ]
    inbox = [
        (
            "m-1",
            "tobias.berg@acme.example",
            "Blue Harbor refund",
            "Blue Harbor Ltd wants a refund on their latest order.",
        ),
        ("m-2", "priya.shah@acme.example", "Budget", "Can we find 30 minutes for the Q3 budget next week?"),
        ("m-3", "orders@nordwind.example", "Delivery confirmed", "Order O-1004 arrived today. Thanks!"),
    ]
    customers = [
        ("c-1", "Nordwind GmbH", "lead", "gold", "tobias.berg@acme.example"),
        ("c-2", "Blue Harbor Ltd", "active", "platinum", "amina.okafor@acme.example"),
        ("c-3", "Cedar & Pine Co", "active", "standard", "tobias.berg@acme.example"),
        ("c-4", "Lumen Labs", "inactive", "standard", "amina.okafor@acme.example"),
    ]
    orders = [
        ("O-1001", "c-2", "Desk lamps", 40, "delivered", "2026-05-02"),
        ("O-1002", "c-3", "Office chairs", 12, "shipped", "2026-06-20"),
        ("O-1003", "c-2", "Standing desks", 8, "delivered", "2026-06-28"),
        ("O-1004", "c-1", "Monitors", 25, "shipped", "2026-07-01"),
        ("O-1005", "c-4", "Whiteboards", 3, "pending", "2026-07-08"),
    ]
    return {
        "employees": {i: {"id": i, "name": n, "team": t, "email": e} for i, n, t, e in employees},
        "events": {
            i: {"id": i, "title": t, "date": d, "start_time": s, "duration_minutes": m, "attendees": a}
            for i, t, d, s, m, a in events
        },
        "inbox": {i: {"id": i, "from": f, "subject": s, "body": b} for i, f, s, b in inbox},
        "sent_emails": {},
        "customers": {i: {"id": i, "name": n, "status": s, "tier": t, "owner_email": o} for i, n, s, t, o in customers},
        "orders": {
            i: {"id": i, "customer_id": c, "product": p, "quantity": q, "status": s, "order_date": d}
            for i, c, p, q, s, d in orders
        },
        "next_id": {"events": 5, "sent_emails": 1},
    }


def _new_id(state: JSONDict, table: str, prefix: str) -> str:
    number = state["next_id"][table]
    state["next_id"][table] = number + 1
    return f"{prefix}-{number}"


def _contains(haystack: str, needle: str) -> bool:
    return needle.strip().casefold() in haystack.casefold()


def _known_emails(state: JSONDict, emails: list[str]) -> list[str]:
    known = {e["email"] for e in state["employees"].values()} | {"orders@nordwind.example"}
    unknown = [email for email in emails if email.strip().lower() not in known]
    if unknown:
        raise ToolError(f"unknown email address(es): {', '.join(unknown)}; look people up with search_directory")
    return [email.strip().lower() for email in emails]


def _get(state: JSONDict, table: str, key: str, what: str) -> JSONDict:
    record = state[table].get(key)
    if record is None:
        raise ToolError(f"no {what} with id {key!r}")
    return record


# ---- tool arguments -------------------------------------------------------------------------------


class SearchDirectory(BaseModel):
    query: str = Field(description="Part of a name, team or email.")


class ListCalendarEvents(BaseModel):
    date: str | None = Field(None, pattern=DATE, description="YYYY-MM-DD; all events when omitted.")


class CreateCalendarEvent(BaseModel):
    title: str = Field(min_length=1)
    date: str = Field(pattern=DATE)
    start_time: str = Field(pattern=TIME)
    duration_minutes: int = Field(gt=0, le=600)
    attendees: list[str] = Field(description="Emails of the other attendees; you are added automatically.")


class EventId(BaseModel):
    event_id: str


class RescheduleCalendarEvent(BaseModel):
    event_id: str
    date: str = Field(pattern=DATE)
    start_time: str = Field(pattern=TIME)


class SearchEmails(BaseModel):
    query: str


class SendEmail(BaseModel):
    to: list[str] = Field(min_length=1)
    subject: str = Field(min_length=1)
    body: str = Field(min_length=1)


class SearchCustomers(BaseModel):
    query: str


class UpdateCustomer(BaseModel):
    customer_id: str
    status: CustomerStatus | None = None
    tier: CustomerTier | None = None
    owner_email: str | None = None


class ListOrders(BaseModel):
    customer_id: str


class OrderId(BaseModel):
    order_id: str


class UpdateOrderStatus(BaseModel):
    order_id: str
    status: OrderStatus


# ---- tools ----------------------------------------------------------------------------------------


def search_directory(state: JSONDict, args: SearchDirectory) -> JSONDict:
    people = [
        e for e in state["employees"].values() if any(_contains(e[k], args.query) for k in ("name", "team", "email"))
    ]
    return {"employees": people}


def list_calendar_events(state: JSONDict, args: ListCalendarEvents) -> JSONDict:
    events = [e for e in state["events"].values() if args.date is None or e["date"] == args.date]
    return {"events": sorted(events, key=lambda e: (e["date"], e["start_time"]))}


def create_calendar_event(state: JSONDict, args: CreateCalendarEvent) -> JSONDict:
    attendees = sorted(set(_known_emails(state, args.attendees)) | {USER_EMAIL})
    event_id = _new_id(state, "events", "ev")
    state["events"][event_id] = {
        "id": event_id,
        "title": args.title,
        "date": args.date,
        "start_time": args.start_time,
        "duration_minutes": args.duration_minutes,
        "attendees": attendees,
    }
    return {"created": state["events"][event_id]}


def cancel_calendar_event(state: JSONDict, args: EventId) -> JSONDict:
    _get(state, "events", args.event_id, "event")
    return {"cancelled": state["events"].pop(args.event_id)}


def reschedule_calendar_event(state: JSONDict, args: RescheduleCalendarEvent) -> JSONDict:
    event = _get(state, "events", args.event_id, "event")
    event.update(date=args.date, start_time=args.start_time)
    return {"rescheduled": event}


def search_emails(state: JSONDict, args: SearchEmails) -> JSONDict:
    found = [
        m for m in state["inbox"].values() if any(_contains(m[k], args.query) for k in ("from", "subject", "body"))
    ]
    return {"emails": found}


def send_email(state: JSONDict, args: SendEmail) -> JSONDict:
    email_id = _new_id(state, "sent_emails", "sent")
    state["sent_emails"][email_id] = {
        "id": email_id,
        "to": sorted(_known_emails(state, args.to)),
        "subject": args.subject,
        "body": args.body,
    }
    return {"sent": state["sent_emails"][email_id]}


def search_customers(state: JSONDict, args: SearchCustomers) -> JSONDict:
    return {
        "customers": [
            c for c in state["customers"].values() if _contains(c["name"], args.query) or c["id"] == args.query
        ]
    }


def update_customer(state: JSONDict, args: UpdateCustomer) -> JSONDict:
    customer = _get(state, "customers", args.customer_id, "customer")
    changes = args.model_dump(exclude={"customer_id"}, exclude_none=True)
    if not changes:
        raise ToolError("nothing to update: give status, tier or owner_email")
    if "owner_email" in changes:
        changes["owner_email"] = _known_emails(state, [changes["owner_email"]])[0]
    customer.update(changes)
    return {"updated": customer}


def list_orders(state: JSONDict, args: ListOrders) -> JSONDict:
    _get(state, "customers", args.customer_id, "customer")
    orders = [o for o in state["orders"].values() if o["customer_id"] == args.customer_id]
    return {"orders": sorted(orders, key=lambda o: o["order_date"])}


def get_order(state: JSONDict, args: OrderId) -> JSONDict:
    return {"order": _get(state, "orders", args.order_id, "order")}


def update_order_status(state: JSONDict, args: UpdateOrderStatus) -> JSONDict:
    order = _get(state, "orders", args.order_id, "order")
    order["status"] = args.status
    return {"updated": order}


@dataclass(frozen=True)
class Tool:
    arguments: type[BaseModel]
    run: Callable[[JSONDict, Any], JSONDict]
    description: str


TOOLS: dict[str, Tool] = {
    "search_directory": Tool(SearchDirectory, search_directory, "Find employees by name, team or email."),
    "list_calendar_events": Tool(
        ListCalendarEvents, list_calendar_events, "List your calendar events, optionally on one date."
    ),
    "create_calendar_event": Tool(CreateCalendarEvent, create_calendar_event, "Create a calendar event."),
    "cancel_calendar_event": Tool(EventId, cancel_calendar_event, "Cancel (delete) a calendar event."),
    "reschedule_calendar_event": Tool(
        RescheduleCalendarEvent, reschedule_calendar_event, "Move an event to a new date and time."
    ),
    "search_emails": Tool(SearchEmails, search_emails, "Search your inbox by sender, subject or body text."),
    "send_email": Tool(SendEmail, send_email, "Send an email."),
    "search_customers": Tool(SearchCustomers, search_customers, "Find customers by name or id."),
    "update_customer": Tool(UpdateCustomer, update_customer, "Change a customer's status, tier or owner."),
    "list_orders": Tool(ListOrders, list_orders, "List a customer's orders, oldest first."),
    "get_order": Tool(OrderId, get_order, "Look up one order."),
    "update_order_status": Tool(UpdateOrderStatus, update_order_status, "Set an order's status."),
}


def tool_schemas() -> list[JSONDict]:
    """The Responses `tools` list for every tool (what task rows declare)."""
    schemas = []
    for name, tool in TOOLS.items():
        parameters = tool.arguments.model_json_schema()
        parameters.pop("title", None)
        for prop in parameters.get("properties", {}).values():
            prop.pop("title", None)
        schemas.append({"type": "function", "name": name, "description": tool.description, "parameters": parameters})
    return schemas


def call_tool(state: JSONDict, name: str, arguments: JSONDict) -> JSONDict:
    """Run one tool on `state` (mutating it); used to replay gold calls."""
    tool = TOOLS[name]
    return tool.run(state, tool.arguments.model_validate(arguments))


def _text(value: Any) -> Any:
    if isinstance(value, str):
        return re.sub(r"\s+", " ", value).strip().casefold()
    if isinstance(value, list):
        return sorted(_text(item) for item in value)
    return value


def comparable(state: JSONDict) -> JSONDict:
    """The grading view of a state (see the module docstring)."""
    view: JSONDict = {}
    for table, records in state.items():
        if table == "next_id":
            continue
        if table in CREATED_TABLES:
            rows = [{k: _text(v) for k, v in record.items() if k != "id"} for record in records.values()]
            view[table] = sorted(rows, key=repr)
        else:
            view[table] = {key: {k: _text(v) for k, v in record.items()} for key, record in records.items()}
    return view


def differences(actual: JSONDict, goal: JSONDict) -> list[str]:
    """Which tables (and records) differ between two grading views."""
    problems = []
    for table in goal:
        if actual.get(table) == goal[table]:
            continue
        if isinstance(goal[table], dict):
            keys = sorted(set(goal[table]) | set(actual.get(table, {})))
            changed = [key for key in keys if actual.get(table, {}).get(key) != goal[table].get(key)]
            problems.append(f"{table}: {', '.join(changed)} differ")
        else:
            problems.append(
                f"{table}: {len(actual.get(table, []))} records, goal has {len(goal[table])} (or contents differ)"
            )
    return problems


def deep_copy(state: JSONDict) -> JSONDict:
    return copy.deepcopy(state)
