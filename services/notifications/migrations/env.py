from lastmile.db import run_migrations_env
from services.notifications.models import Base

run_migrations_env(Base.metadata)
