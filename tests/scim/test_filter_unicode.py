"""A filter whose string value is a JSON escape of a lone surrogate ("\\ud800") is a SCIM 400, never a 500.

Found by the hostile-JSON fuzzer of tests/reliability/test_doors.py (issue 14): the escape decodes to a string that no
store can encode, and the query failed inside the database driver.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LONE = json.dumps("\ud800")  # '"\\ud800"', as an attacker writes it
FILTERS = [
    f"userName eq {LONE}",
    f"emails[value co {LONE}]",
    f"title eq {json.dumps('a' + chr(0xDFFF))}",
    f"meta.lastModified gt {LONE}",
    f'userName eq "x" or displayName sw {LONE}',
]


@pytest.mark.parametrize("text", FILTERS)
@pytest.mark.parametrize("resource", ["/Users", "/Groups"])
def test_a_lone_surrogate_in_a_filter_value_is_a_scim_400(scim: Any, resource: str, text: str) -> None:
    if resource == "/Groups":
        text = text.replace("userName", "displayName").replace("emails[value", "members[value")
        text = text.replace("title", "externalId")
    answers = [
        scim.get(f"{resource}?filter={quote(text, safe='')}"),
        scim.request("POST", f"{resource}/.search", {"schemas": [SEARCH], "filter": text}),
    ]
    for answer in answers:
        assert answer.status_code == 400, (text, answer.status_code, answer.text)
        assert answer.json()["schemas"] == [ERROR]
        assert answer.json().get("scimType") == "invalidFilter", answer.text


SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
