from gateway.models import Base
from lastmile.db import run_migrations_env

run_migrations_env(Base.metadata)
