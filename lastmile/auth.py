"""Who is calling. The gateway authenticates the token and passes the actor to
every RPC as a plain dict; services decide ownership and site scope from it."""
from dataclasses import asdict, dataclass
from typing import Optional

from lastmile import sites
from lastmile.errors import Forbidden

ROLES = ("resident", "volunteer", "collector", "staff", "admin")


@dataclass(frozen=True)
class Actor:
    id: str
    role: str
    site_id: Optional[str] = None
    name: Optional[str] = None

    @classmethod
    def from_dict(cls, data):
        return cls(id=data["id"], role=data["role"], site_id=data.get("site_id"), name=data.get("name"))

    def to_dict(self):
        return asdict(self)

    @property
    def is_admin(self):
        return self.role == "admin"

    def governs(self, site_id):
        """Staff govern their own site and everything inside it; admins govern all."""
        if self.is_admin:
            return True
        return self.role == "staff" and sites.is_inside(site_id, self.site_id)

    def require_governs(self, site_id, what="this"):
        if not self.governs(site_id):
            raise Forbidden(f"Only staff of a site enclosing {site_id} may do {what}")


SYSTEM = Actor(id="system", role="admin", name="Lastmile")
