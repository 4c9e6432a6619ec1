"""A SCIM write leaves no stale pull digest: a later import of the same source still sees what SCIM changed."""

from __future__ import annotations

from sqlalchemy import select

from syncd.model import Identity, Snapshot
from syncd.store.repository import SyncStore
from syncd.store.tables import identities

from .conftest import Scim

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def test_an_import_after_a_scim_write_compares_the_row_again(scim: Scim) -> None:
    created = scim.post("/Users", {"schemas": [USER], "userName": "ada@example.com", "displayName": "Ada"})
    assert created.status_code == 201, created.text
    scim_id = created.json()["id"]
    store = SyncStore(scim.engine)
    imported = Identity("okta", scim_id, "ada@example.com", "ada@example.com", "Ada Lovelace")
    store.record_snapshot(Snapshot("okta", identities=[imported]))  # `syncd import --source okta`, say
    with scim.engine.connect() as conn:
        assert conn.execute(select(identities.c.digest).where(identities.c.external_id == scim_id)).scalar()

    patched = scim.patch(f"/Users/{scim_id}", {"op": "replace", "path": "displayName", "value": "Countess"})
    assert patched.status_code == 200, patched.text
    with scim.engine.connect() as conn:
        assert conn.execute(select(identities.c.digest).where(identities.c.external_id == scim_id)).scalar() is None

    again = store.record_snapshot(Snapshot("okta", identities=[imported]))
    assert again.identities_updated == 1
    assert store.dump_source("okta")["identities"][scim_id]["display_name"] == "Ada Lovelace"
