from lastmile.db import run_migrations_env
from services.ratings.models import Base

run_migrations_env(Base.metadata)
