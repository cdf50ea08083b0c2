"""Open311 GeoReport v2 at ``/open311/v2``, so that any Open311 client can file and
follow needs. Categories are the services; a request becomes a need with channel
``open311``; Lastmile's statuses map to open/closed with the detail in
``status_notes``. Writes need an ``api_key`` an admin issued. Phones never leave,
addresses leave masked."""
import json
import math
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from werkzeug.wrappers import Response

from gateway.http import ApiRoute
from lastmile.auth import SYSTEM
from lastmile.errors import LastmileError
from lastmile.validation import mask_text
from services.needs.domain import BENEFICIARY_GROUPS

PREFIX = "/open311/v2"
LOCAL_TIME = ZoneInfo("Asia/Shanghai")
OPEN = ("submitted", "dispatching", "assigned", "in_service", "unfilled")
CLOSED = ("completed", "rated", "rejected", "cancelled")
STATUS_NOTES = {
    "submitted": "submitted: waiting for review by the practice center",
    "dispatching": "dispatching: offered to volunteers",
    "assigned": "assigned: a volunteer accepted",
    "in_service": "in_service: the volunteer is serving",
    "unfilled": "unfilled: no volunteer yet; staff are dispatching by hand",
    "completed": "completed: served",
    "rated": "rated: served and rated",
    "rejected": "rejected",
    "cancelled": "cancelled",
}
NEAREST_STATION_KM = 10
# XML element names of list items, by the name of the list.
ITEM_TAGS = {"services": "service", "service_requests": "request", "errors": "error", "attributes": "attribute",
             "values": "value", "endpoints": "endpoint", "formats": "format", "keywords": "keyword"}


class Open311Error(Exception):
    def __init__(self, code, description):
        super().__init__(description)
        self.code = code
        self.description = description


def to_xml(root_tag, value):
    def build(parent, tag, item):
        element = ElementTree.SubElement(parent, tag)
        if isinstance(item, dict):
            for key, child in item.items():
                build(element, key, child)
        elif isinstance(item, list):
            for child in item:
                build(element, ITEM_TAGS.get(tag, "item"), child)
        elif isinstance(item, bool):
            element.text = "true" if item else "false"
        elif item is not None:
            element.text = str(item)

    root = ElementTree.Element(root_tag)
    for entry in value if isinstance(value, list) else [value]:
        if isinstance(value, list):
            build(root, ITEM_TAGS.get(root_tag, "item"), entry)
        else:
            for key, child in entry.items():
                build(root, key, child)
    return b'<?xml version="1.0" encoding="utf-8"?>' + ElementTree.tostring(root, encoding="utf-8")


def render(fmt, root_tag, value, status=200):
    if fmt == "xml":
        return Response(to_xml(root_tag, value), status=status, mimetype="text/xml")
    return Response(json.dumps(value, ensure_ascii=False), status=status, mimetype="application/json")


def local_iso(value):
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(LOCAL_TIME).isoformat(timespec="seconds")


def parse_date(value, name):
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Open311Error(400, f"{name} must be a W3C date-time such as 2026-11-28T09:00:00+08:00")
    return moment if moment.tzinfo else moment.replace(tzinfo=LOCAL_TIME)


def service_request(need, category_names):
    """A need as an Open311 service request, as any subscriber may see it."""
    detail = STATUS_NOTES.get(need["status"], need["status"])
    if need.get("rejection_reason"):
        detail += f": {need['rejection_reason']}"
    return {
        "service_request_id": need["id"],
        "status": "open" if need["status"] in OPEN else "closed",
        "status_notes": detail,
        "service_name": category_names.get(need["category"], need["category"]),
        "service_code": need["category"],
        "description": need["description"] or need["title"],
        "agency_responsible": need["site_id"],
        "service_notice": "",
        "requested_datetime": local_iso(need["created_at"]),
        "updated_datetime": local_iso(need["updated_at"]),
        "expected_datetime": local_iso(need.get("window_start")),
        "address": mask_text(need["address"]),
        "address_id": "",
        "zipcode": "",
        # A village, not a door: the resident's exact place is not for the public.
        "lat": None if need.get("lat") is None else round(need["lat"], 2),
        "long": None if need.get("lon") is None else round(need["lon"], 2),
        "media_url": "",
    }


def distance_km(lat1, lon1, lat2, lon2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 12742 * math.asin(math.sqrt(a))


def nearest_station(all_sites, lat, lon):
    stations = [s for s in all_sites if s["level"] == "station" and s["lat"] is not None and s["lon"] is not None]
    if not stations:
        return None
    best = min(stations, key=lambda s: distance_km(lat, lon, s["lat"], s["lon"]))
    return best["id"] if distance_km(lat, lon, best["lat"], best["lon"]) <= NEAREST_STATION_KM else None


def open311_route(method, suffix):
    def decorate(handler):
        def entrypoint(self, request, fmt, **path_values):
            try:
                self._open311_jurisdiction(request)
                return handler(self, request, fmt, **path_values)
            except Open311Error as exc:
                return render(fmt, "errors", [{"code": exc.code, "description": exc.description}], exc.code)
            except LastmileError as exc:
                description = exc.message + ("".join(f"; {k}: {', '.join(map(str, v))}" for k, v in exc.details.items()
                                                     if isinstance(v, list)))
                return render(fmt, "errors", [{"code": exc.status, "description": description}], exc.status)

        entrypoint.__name__ = handler.__name__
        entrypoint.__doc__ = handler.__doc__
        path = f"{PREFIX}/{suffix}.<any(json, xml):fmt>"
        entrypoint.lastmile_route = {"method": method, "path": path, "roles": None, "public": True, "status": 200,
                                     "open311": True}
        return ApiRoute.decorator(method, path)(entrypoint)

    return decorate


class Open311Routes:
    """Mixed into the gateway service: needs ``self.rpc`` and ``self.accounts``."""

    def _open311_jurisdiction(self, request):
        jurisdiction = (request.values.get("jurisdiction_id") or "").strip()
        if jurisdiction:  # an empty jurisdiction_id counts as absent
            roots = {s["id"] for s in self.rpc("needs", "list_sites") if s["level"] == "district"}
            if jurisdiction not in roots:
                raise Open311Error(404, f"jurisdiction_id {jurisdiction} not found")

    def _open311_categories(self):
        return {c["code"]: c["name"] for c in self.rpc("needs", "list_categories")}

    @open311_route("GET", "discovery")
    def open311_discovery(self, request, fmt):
        base = request.host_url.rstrip("/") + PREFIX + "/"
        return render(fmt, "discovery", {
            "changeset": "2026-11-28T00:00:00+08:00",
            "contact": "新时代文明实践中心 (the district practice center running Lastmile)",
            "key_service": "An admin issues API keys: POST /api/v1/open311/keys",
            "endpoints": [{"specification": "http://wiki.open311.org/GeoReport_v2", "url": base,
                           "changeset": "2026-11-28T00:00:00+08:00", "type": "production",
                           "formats": ["application/json", "text/xml"]}],
        })

    @open311_route("GET", "services")
    def open311_services(self, request, fmt):
        services = [{"service_code": code, "service_name": name, "description": f"志愿服务：{name}",
                     "metadata": True, "type": "realtime", "keywords": code, "group": "志愿服务"}
                    for code, name in self._open311_categories().items()]
        return render(fmt, "services", services)

    @open311_route("GET", "services/<code>")
    def open311_service(self, request, fmt, code):
        if code not in self._open311_categories():
            raise Open311Error(404, f"service_code {code} not found")
        projects = self.rpc("needs", "list_projects", {"category": code})
        stations = [s for s in self.rpc("needs", "list_sites") if s["level"] == "station"]
        attributes = [
            {"variable": True, "code": "station", "datatype": "singlevaluelist", "required": False, "order": 1,
             "datatype_description": "", "description": "实践站 (station); without it, the one nearest lat/long",
             "values": [{"key": s["id"], "name": s["name"]} for s in stations]},
            {"variable": True, "code": "beneficiary_group", "datatype": "singlevaluelist", "required": False,
             "order": 2, "datatype_description": "", "description": "服务对象 (who is served)",
             "values": [{"key": g, "name": g} for g in BENEFICIARY_GROUPS]},
            {"variable": True, "code": "beneficiaries", "datatype": "number", "required": False, "order": 3,
             "datatype_description": "1 to 500", "description": "服务人数 (people served)", "values": []},
        ]
        if projects:
            attributes.append({
                "variable": True, "code": "project", "datatype": "singlevaluelist", "required": False, "order": 4,
                "datatype_description": "", "description": "服务菜单项目 (a project of the service menu)",
                "values": [{"key": p["id"], "name": p["name"]} for p in projects]})
        return render(fmt, "service_definition", {"service_code": code, "attributes": attributes})

    @open311_route("POST", "requests")
    def open311_submit(self, request, fmt):
        form = request.form if request.form else request.args
        actor = self.accounts.api_key_actor(form.get("api_key") or request.args.get("api_key"))
        if actor is None:
            raise Open311Error(403, "A valid api_key is required to file requests")
        code = form.get("service_code")
        if not code:
            raise Open311Error(400, "service_code is required")
        if code not in self._open311_categories():
            raise Open311Error(404, f"service_code {code} not found")
        station = form.get("attribute[station]")
        lat, lon = self._coordinates(form)
        if not station:
            if lat is None:
                raise Open311Error(400, "Give lat and long, address_string with attribute[station], or a station")
            station = nearest_station(self.rpc("needs", "list_sites"), lat, lon)
            if station is None:
                raise Open311Error(400, f"No station within {NEAREST_STATION_KM} km of lat/long")
        phone = form.get("phone")
        if not phone:
            raise Open311Error(400, "phone is required: volunteers must be able to reach the resident")
        name = " ".join(p for p in (form.get("last_name"), form.get("first_name")) if p) or "居民"
        description = (form.get("description") or "").strip()
        title = description[:60] if len(description) >= 2 else self._open311_categories()[code]
        body = {
            "category": code, "title": title, "description": description[:2000], "site_id": station,
            "address": (form.get("address_string") or (f"{lat},{lon}" if lat is not None else station))[:200],
            "contact_phone": phone, "beneficiary_group": form.get("attribute[beneficiary_group]") or "general",
            "beneficiaries": self._number(form.get("attribute[beneficiaries]") or "1", "attribute[beneficiaries]"),
            "lat": lat, "lon": lon, "channel": "open311", "on_behalf_of": {"name": name[:64], "phone": phone},
        }
        if form.get("attribute[project]"):
            body["project_id"] = form.get("attribute[project]")
            body.pop("category")
        result = self.rpc("needs", "submit_need", actor.to_dict(), body)
        need = result["need"]
        notice = "已受理，等待实践中心审核" if need["status"] == "submitted" else STATUS_NOTES[need["status"]]
        return render(fmt, "service_requests", [{"service_request_id": need["id"], "service_notice": notice,
                                                 "account_id": None}], 201 if result["created"] else 200)

    @open311_route("GET", "requests")
    def open311_requests(self, request, fmt):
        args = request.args
        query = {"page_size": 100}
        if args.get("service_request_id"):
            query["ids"] = args["service_request_id"]
        else:
            end = parse_date(args["end_date"], "end_date") if args.get("end_date") else datetime.now(timezone.utc)
            start = parse_date(args["start_date"], "start_date") if args.get("start_date") else end - timedelta(days=90)
            query["created_from"], query["created_to"] = start.isoformat(), end.isoformat()
            if args.get("service_code"):
                query["category"] = args["service_code"]
            if args.get("status"):
                wanted = {s.strip() for s in args["status"].split(",")}
                if not wanted <= {"open", "closed"}:
                    raise Open311Error(400, "status is open, closed, or both separated by a comma")
                query["status"] = ",".join((OPEN if "open" in wanted else ()) + (CLOSED if "closed" in wanted else ()))
        names, found = self._open311_categories(), []
        for page in range(1, 11):  # the specification's default cap: 1000 requests
            listed = self.rpc("needs", "list_needs", SYSTEM.to_dict(), dict(query, page=page))
            found += listed["items"]
            if len(found) >= listed["total"]:
                break
        return render(fmt, "service_requests", [service_request(n, names) for n in found])

    @open311_route("GET", "requests/<request_id>")
    def open311_request(self, request, fmt, request_id):
        listed = self.rpc("needs", "list_needs", SYSTEM.to_dict(), {"ids": request_id})
        if not listed["items"]:
            raise Open311Error(404, f"service_request_id {request_id} not found")
        return render(fmt, "service_requests", [service_request(listed["items"][0], self._open311_categories())])

    @open311_route("GET", "tokens/<token>")
    def open311_token(self, request, fmt, token):
        # Lastmile answers every request with its id at once, so a token is that id.
        listed = self.rpc("needs", "list_needs", SYSTEM.to_dict(), {"ids": token})
        if not listed["items"]:
            raise Open311Error(404, f"token {token} not found")
        return render(fmt, "service_requests", [{"service_request_id": token, "token": token}])

    def _coordinates(self, form):
        if form.get("lat") is None and form.get("long") is None:
            return None, None
        lat, lon = self._number(form.get("lat"), "lat", float), self._number(form.get("long"), "long", float)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise Open311Error(400, "lat and long are out of range")
        return lat, lon

    @staticmethod
    def _number(value, name, kind=int):
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise Open311Error(400, f"{name} must be a number")
        if kind is float and not math.isfinite(number):
            raise Open311Error(400, f"{name} must be a number")
        return number

