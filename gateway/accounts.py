"""Accounts, passwords and tokens: argon2 hashes, HS256 tokens that carry the
role and site, and the first admin from the environment."""
import hashlib
import logging
import secrets
from datetime import timedelta

import jwt
import sqlalchemy as sa
from argon2 import PasswordHasher
from eventlet import tpool
from eventlet.semaphore import Semaphore
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from marshmallow import fields, validate

from gateway.models import Account, ApiKey, LoginFailures, Setting
from lastmile import config
from lastmile.auth import Actor
from lastmile.db import insert_missing, is_postgres, locked_row, new_id, utcnow
from lastmile.events import isoformat, make_event
from lastmile.errors import Conflict, Forbidden, InvalidInput, LastmileError, NotFound, Unauthorized
from lastmile.store import Store
from lastmile.validation import StrictSchema, phone_field, site_id_field

log = logging.getLogger(__name__)
hasher = PasswordHasher()


# argon2 spends a few hundred milliseconds of CPU on purpose. In a native thread it
# leaves the gateway's other requests running meanwhile (in the greenthread it held
# them all up, long enough for their RPCs to time out when a few people signed in).
# Two at a time: each takes a core and 64 MiB.
_hashing = Semaphore(2)


def hash_password(password):
    with _hashing:
        return tpool.execute(hasher.hash, password)


def verify_password(password_hash, password):
    with _hashing:
        return tpool.execute(hasher.verify, password_hash, password)

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=1)


class TooManyLogins(LastmileError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message, details=None, retry_after=60):
        super().__init__(message, details)
        self.headers = {"Retry-After": str(retry_after)}
# Verified against when the phone is unknown, so timing does not reveal which phones exist.
_DUMMY_HASH = hasher.hash("not a password of anyone")


class RegisterSchema(StrictSchema):
    phone = phone_field(required=True)
    password = fields.String(required=True, validate=validate.Length(min=8, max=128))
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    role = fields.String(required=True, validate=validate.OneOf(("resident", "volunteer")))


class AccountCreateSchema(RegisterSchema):
    role = fields.String(required=True, validate=validate.OneOf(("collector", "staff", "admin")))
    site_id = site_id_field(load_default=None, allow_none=True)


class PasswordChangeSchema(StrictSchema):
    old_password = fields.String(required=True, validate=validate.Length(min=1, max=128))
    new_password = fields.String(required=True, validate=validate.Length(min=8, max=128))


class ApiKeySchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=2, max=80))


class TokenSchema(StrictSchema):
    phone = fields.String(required=True, validate=validate.Length(min=1, max=32))
    password = fields.String(required=True, validate=validate.Length(min=1, max=128))


def account_view(account):
    return {
        "id": account.id, "phone": account.phone, "name": account.name, "role": account.role,
        "site_id": account.site_id, "created_at": isoformat(account.created_at),
    }


def announce(store, session, account, request_id=None):
    """``account_registered`` into the gateway's outbox, in the transaction that
    creates the account: the notifications service keeps its directory of phones,
    roles and sites by it. (Call ``store.relay.kick()`` after the commit.)"""
    data = {"id": account.id, "role": account.role, "site_id": account.site_id, "name": account.name,
            "phone": account.phone}
    event = make_event(store.service_name, "account_registered", data, request_id=request_id)
    session.execute(sa.insert(store.outbox).values(event_id=event["event_id"], type=event["type"], need_id=None,
                                                   body=event, created_at=utcnow()))
    return event


class GatewayStore(Store):
    """The gateway's database, plus what must exist before the first request: the
    token signing key (shared by every gateway replica) and the first admin."""

    def start(self):
        super().start()
        with self.Session.begin() as session:
            self.secret = config.get("LASTMILE_SECRET_KEY") or self._stored_secret(session)
        with self.Session.begin() as session:
            # Accounts made before the gateway announced them: announced once, now.
            if insert_missing(session, Setting.__table__, key="accounts_announced", value=utcnow().isoformat()):
                for account in session.scalars(sa.select(Account)):
                    announce(self, session, account)
        phone, password = config.get("LASTMILE_ADMIN_PHONE"), config.get("LASTMILE_ADMIN_PASSWORD")
        # Hashed in the greenthread, not in a native one: yielding here would let the
        # web server take requests (the admin's first login) before the admin exists.
        if phone and password:
            with self.Session.begin() as session:
                if session.scalars(sa.select(Account).where(Account.phone == phone)).first() is None:
                    admin = Account(id=new_id(), phone=phone, password_hash=hasher.hash(password), name="Administrator",
                                    role="admin", site_id=None, token_version=1, created_at=utcnow())
                    session.add(admin)
                    session.flush()
                    announce(self, session, admin)
                    log.info("created the first admin account")
        self.relay.kick()

    def _stored_secret(self, session):
        row = session.get(Setting, "token_secret")
        if row is None:
            row = Setting(key="token_secret", value=secrets.token_urlsafe(48))
            session.add(row)
            try:
                session.flush()
            except sa.exc.IntegrityError:
                # Another replica stored it first.
                session.rollback()
                row = session.get(Setting, "token_secret")
        return row.value

    def get_dependency(self, worker_ctx):
        return Accounts(self, worker_ctx)


def api_key_view(record):
    return {"id": record.id, "name": record.name, "created_by": record.created_by,
            "created_at": isoformat(record.created_at), "revoked": record.revoked}


class Accounts:
    def __init__(self, store, worker_ctx):
        self.store = store
        self.worker_ctx = worker_ctx

    def register(self, data, site_id=None):
        with self.store.Session.begin() as session:
            if session.scalars(sa.select(Account.id).where(Account.phone == data["phone"])).first():
                raise Conflict("This phone is registered already", {"phone": ["Registered already."]})
            account = Account(id=new_id(), phone=data["phone"], password_hash=hash_password(data["password"]),
                              name=data["name"], role=data["role"], site_id=site_id, token_version=1,
                              created_at=utcnow())
            session.add(account)
            try:
                session.flush()
            except sa.exc.IntegrityError:
                raise Conflict("This phone is registered already", {"phone": ["Registered already."]})
            request_id = self.worker_ctx.context_data.get("request_id") if self.worker_ctx else None
            announce(self.store, session, account, request_id)
            view = account_view(account)
        self.store.relay.kick()
        return view

    def issue_token(self, phone, password):
        now = utcnow()
        with self.store.Session.begin() as session:
            if is_postgres(session):
                # Locked (made first if missing): logins to one phone take turns, so every guess counts.
                failures = locked_row(session, LoginFailures, phone=phone, count=0, locked_until=None)
            else:
                # SQLite would lock its whole file for that write, and the hash check below yields:
                # any other write of this process would then block the process, and the check with it.
                failures = session.get(LoginFailures, phone)
            if failures is not None and failures.locked_until and failures.locked_until > now:
                wait = int((failures.locked_until - now).total_seconds()) + 1
                raise TooManyLogins("Too many failed logins for this phone; try again later",
                                    {"retry_after": wait}, retry_after=wait)
            account = session.scalars(sa.select(Account).where(Account.phone == phone)).first()
            try:
                verify_password(account.password_hash if account else _DUMMY_HASH, password)
            except (VerifyMismatchError, InvalidHashError):
                account = None
        if account is None:
            self._count_failure(phone, now)
            raise Unauthorized("Wrong phone or password")
        with self.store.Session.begin() as session:
            session.execute(sa.update(LoginFailures).where(LoginFailures.phone == phone)
                            .values(count=0, locked_until=None))
            return self._token_for(account)

    def _count_failure(self, phone, now):
        # Its own transaction: the failure must count even though the login fails.
        with self.store.Session.begin() as session:
            failures = locked_row(session, LoginFailures, phone=phone, count=0, locked_until=None)
            failures.count += 1
            if failures.count >= MAX_FAILED_LOGINS:
                failures.count, failures.locked_until = 0, now + LOCKOUT

    def change_password(self, actor, data):
        """A new password, and every token issued before it stops working."""
        with self.store.Session.begin() as session:
            account = session.get(Account, actor.id, with_for_update=True)
            try:
                verify_password(account.password_hash, data["old_password"])
            except (VerifyMismatchError, InvalidHashError):
                raise Forbidden("The current password is not right")
            account.password_hash = hash_password(data["new_password"])
            account.token_version += 1
            session.flush()
            return self._token_for(account)

    def _token_for(self, account):
        ttl = config.get_int("LASTMILE_TOKEN_TTL")
        now = utcnow()
        claims = {
            "sub": account.id, "role": account.role, "site_id": account.site_id, "name": account.name,
            "ver": account.token_version, "iat": now, "exp": now + timedelta(seconds=ttl),
        }
        token = jwt.encode(claims, self.store.secret, algorithm="HS256")
        return {"access_token": token, "token_type": "bearer", "expires_in": ttl,
                "user": {"id": account.id, "role": account.role, "site_id": account.site_id, "name": account.name}}

    def authenticate(self, header):
        """The actor behind an ``Authorization: Bearer`` header, or 401."""
        if not header:
            raise Unauthorized("Send a bearer token in the Authorization header")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Send a bearer token in the Authorization header")
        try:
            claims = jwt.decode(token.strip(), self.store.secret, algorithms=["HS256"],
                                options={"require": ["sub", "exp", "ver"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired; ask for a new one")
        except jwt.InvalidTokenError:
            raise Unauthorized("The token is not valid")
        # Every request asks this: one statement, without the ORM or a transaction around it.
        with self.store.autocommit_engine.connect() as connection:
            account = connection.execute(
                sa.select(Account.role, Account.site_id, Account.name, Account.token_version)
                .where(Account.id == claims["sub"])).first()
        if account is None or account.token_version != claims["ver"]:
            raise Unauthorized("The token has been revoked")
        return Actor(id=claims["sub"], role=account.role, site_id=account.site_id, name=account.name)

    def issue_api_key(self, actor, name):
        """A new key for another system; shown once, kept only as its hash."""
        key = "lmk_" + secrets.token_urlsafe(32)
        with self.store.Session.begin() as session:
            record = ApiKey(id=new_id(), name=name, key_hash=hashlib.sha256(key.encode()).hexdigest(),
                            created_by=actor.id, created_at=utcnow(), revoked=False)
            session.add(record)
            return {"id": record.id, "name": name, "api_key": key,
                    "created_at": isoformat(record.created_at)}

    def api_keys(self):
        with self.store.Session() as session:
            return [api_key_view(k) for k in session.scalars(sa.select(ApiKey).order_by(ApiKey.created_at))]

    def revoke_api_key(self, key_id):
        """From now on the key files nothing; revoking it again changes nothing."""
        with self.store.Session.begin() as session:
            record = session.get(ApiKey, key_id, with_for_update=True)
            if record is None:
                raise NotFound(f"No API key {key_id}")
            record.revoked = True
            return api_key_view(record)

    def api_key_actor(self, key):
        """The actor an API key writes as (a collector registering for residents), or None."""
        if not key:
            return None
        with self.store.Session() as session:
            record = session.scalars(sa.select(ApiKey).where(
                ApiKey.key_hash == hashlib.sha256(key.encode()).hexdigest(), ApiKey.revoked.is_(False))).first()
            if record is None:
                return None
            return Actor(id=record.id, role="collector", site_id=None, name=record.name)

    def account(self, account_id):
        with self.store.Session() as session:
            account = session.get(Account, account_id)
            return account_view(account) if account else None

    def require_site_for(self, role, site_id):
        if role in ("collector", "staff") and not site_id:
            raise InvalidInput("Collectors and staff belong to a site", {"site_id": ["Required for this role."]})
