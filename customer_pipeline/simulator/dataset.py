"""The users behind the simulator, with their dirt and duplicates: a pure function of the seed.

The 12 real reqres users come first, then synthetic ones. Records are served flat (reqres
field names) or nested (``uid``, ``contact.email``, ``name.first``...), dirt included.
"""

from __future__ import annotations

import math
from typing import Any

from .._random import stable_unit, stable_units
from .config import FieldStyle

REAL_USERS = [
    (1, "George", "Bluth"),
    (2, "Janet", "Weaver"),
    (3, "Emma", "Wong"),
    (4, "Eve", "Holt"),
    (5, "Charles", "Morris"),
    (6, "Tracey", "Ramos"),
    (7, "Michael", "Lawson"),
    (8, "Lindsay", "Ferguson"),
    (9, "Tobias", "Funke"),
    (10, "Byron", "Fields"),
    (11, "George", "Edwards"),
    (12, "Rachel", "Howell"),
]
FIRST_NAMES = [
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Elif",
    "Femi",
    "Gus",
    "Hana",
    "Ivo",
    "June",
    "Kai",
    "Lena",
    "Marta",
    "Noor",
    "Omar",
    "Pia",
    "Quinn",
    "Rosa",
    "Sven",
    "Tess",
]
LAST_NAMES = [
    "Abbott",
    "Baker",
    "Chen",
    "Diaz",
    "Evans",
    "Fischer",
    "Gupta",
    "Hughes",
    "Ito",
    "Jensen",
    "Khan",
    "Lopez",
    "Moreau",
    "Novak",
    "Okafor",
    "Park",
    "Rossi",
    "Silva",
    "Tanaka",
    "Weber",
]
# Each kind of dirt a record can carry; the ones marked "rejected" make it unusable.
DIRT_KINDS = (
    "email_invalid",
    "email_missing",
    "first_name_blank",
    "last_name_missing",
    "avatar_invalid",
    "id_as_string",
    "padded_names",
    "extra_keys",
    "id_unusable",  # rejected
    "not_an_object",  # rejected
)


class Dataset:
    """The users behind the simulator, with their dirt and duplicates: pure in the seed."""

    def __init__(
        self,
        total: int,
        seed: int,
        dirty_rate: float,
        duplicate_rate: float,
        field_style: FieldStyle = "flat",
    ) -> None:
        self.total = total
        self.seed = seed
        self.dirty_rate = dirty_rate
        self.duplicate_rate = duplicate_rate
        self.field_style = field_style
        self._shape = nest if field_style == "nested" else _as_is

    def clean_user(self, user_id: int) -> dict[str, Any]:
        """The user as a well-behaved API would send it."""
        if user_id <= len(REAL_USERS):
            _, first, last = REAL_USERS[user_id - 1]
            email = f"{first.lower()}.{last.lower()}@reqres.in"
        else:
            a, b = stable_units(self.seed, user_id, b"names", 2)
            first = FIRST_NAMES[int(a * len(FIRST_NAMES))]
            last = LAST_NAMES[int(b * len(LAST_NAMES))]
            email = f"{first.lower()}.{last.lower()}.{user_id}@example.com"
        return {
            "id": user_id,
            "email": email,
            "first_name": first,
            "last_name": last,
            "avatar": f"https://reqres.in/img/faces/{user_id}-image.jpg",
        }

    def dirt(self, user_id: int) -> str | None:
        """Which kind of dirt this user's record carries, if any."""
        pick, kind = stable_units(self.seed, user_id, b"dirt", 2)
        if pick >= self.dirty_rate:
            return None
        return DIRT_KINDS[int(kind * len(DIRT_KINDS))]

    def record(self, user_id: int) -> Any:
        """The record as served, dirt included, in the dataset's field style."""
        return self._shape(self._flat_record(user_id))

    def _flat_record(self, user_id: int) -> Any:
        user = self.clean_user(user_id)
        kind = self.dirt(user_id)
        if kind is None:
            return user
        if kind == "email_invalid":
            user["email"] = user["email"].replace("@", " at ")
        elif kind == "email_missing":
            del user["email"]
        elif kind == "first_name_blank":
            user["first_name"] = "   "
        elif kind == "last_name_missing":
            del user["last_name"]
        elif kind == "avatar_invalid":
            user["avatar"] = "ftp://faces/" + str(user_id)
        elif kind == "id_as_string":
            user["id"] = str(user_id)
        elif kind == "padded_names":
            user["first_name"] = f"  {user['first_name']} "
            user["last_name"] = f"\t{user['last_name']}  "
        elif kind == "extra_keys":
            user["job"] = "leader"
            user["meta"] = {"nested": [1, 2, {"x": None}]}
        elif kind == "id_unusable":
            user["id"] = f"user-{user_id}"
        else:  # not_an_object
            return [user_id, user["email"]]
        return user

    def duplicated(self, user_id: int) -> bool:
        """Whether this user shows up again at the top of the next page."""
        return stable_unit(self.seed, user_id, b"dup") < self.duplicate_rate

    def duplicate_record(self, user_id: int) -> Any:
        """The second copy: fixed if the first was dirty, else degraded or identical."""
        user = self.clean_user(user_id)
        if self.dirt(user_id) is None and stable_unit(self.seed, user_id, b"dupkind") < 0.5:
            del user["avatar"]
        return self._shape(user)

    def total_pages(self, per_page: int) -> int:
        return math.ceil(self.total / per_page)

    def window_records(self, start: int, count: int) -> list[Any]:
        """Users ``start+1..start+count``, after copies of duplicated users of the window before.

        Every pagination style serves windows, so each sends the same users in the same order;
        past the end a window is empty.
        """
        if start < 0 or start >= self.total:
            return []
        records = [
            self.duplicate_record(user_id)
            for user_id in range(max(1, start - count + 1), start + 1)
            if self.duplicated(user_id)
        ]
        records.extend(
            self.record(user_id) for user_id in range(start + 1, min(self.total, start + count) + 1)
        )
        return records

    def page_records(self, page: int, per_page: int) -> list[Any]:
        """The records of one listing page (counted from 1), duplicates from the page before."""
        return self.window_records((page - 1) * per_page, per_page) if page >= 1 else []


def _as_is(record: Any) -> Any:
    return record


# Where each flat field goes in the nested style: (object, ((flat name, nested name), ...)).
NESTING = (
    ("contact", (("email", "email"),)),
    ("name", (("first_name", "first"), ("last_name", "last"))),
    ("photo", (("avatar", "url"),)),
)


def nest(record: Any) -> Any:
    """The nested shape of a flat record: ``uid``, ``contact.email``, ``name.first``...

    Ids become integral strings, as json-server 1.0 sends them; the ``id_as_string`` dirt, a
    string id among ints when flat, is an int id among strings when nested. Missing fields
    stay missing, an object left empty is left out, unknown keys stay at the top.
    """
    if not isinstance(record, dict):
        return record
    flat = dict(record)
    uid = flat.pop("id")
    nested: dict[str, Any] = {
        "uid": str(uid) if isinstance(uid, int) else int(uid) if uid.isdigit() else uid
    }
    for outer, names in NESTING:
        inner = {new: flat.pop(old) for old, new in names if old in flat}
        if inner:
            nested[outer] = inner
    nested.update(flat)
    return nested
