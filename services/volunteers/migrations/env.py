from lastmile.db import run_migrations_env
from services.volunteers.models import Base

run_migrations_env(Base.metadata)
