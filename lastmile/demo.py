"""Qiongshan demo data, loaded through the public HTTP API so that it passes the
same validation as everything else: ``python -m lastmile.demo``.

Running it twice changes nothing: what exists already (409) is left as it is.
"""
import argparse
import sys

import requests

from lastmile import config

PASSWORD = "lastmile123"
ADMIN_PHONE = "13800000000"
ADMIN_PASSWORD = "lastmile-admin"

DISTRICT = ("qiongshan", "琼山区新时代文明实践中心", 20.003, 110.354)
# 实践所: four streets and eight towns of Qiongshan.
INSTITUTES = [
    ("fucheng", "府城街道新时代文明实践所", 20.001, 110.352),
    ("binjiang", "滨江街道新时代文明实践所", 20.020, 110.360),
    ("guoxing", "国兴街道新时代文明实践所", 20.025, 110.345),
    ("fengxiang", "凤翔街道新时代文明实践所", 19.990, 110.370),
    ("longtang", "龙塘镇新时代文明实践所", 19.948, 110.430),
    ("yunlong", "云龙镇新时代文明实践所", 19.830, 110.470),
    ("hongqi", "红旗镇新时代文明实践所", 19.780, 110.490),
    ("sanmenpo", "三门坡镇新时代文明实践所", 19.720, 110.560),
    ("dapo", "大坡镇新时代文明实践所", 19.700, 110.450),
    ("jiazi", "甲子镇新时代文明实践所", 19.730, 110.400),
    ("jiuzhou", "旧州镇新时代文明实践所", 19.830, 110.380),
    ("dazhipo", "大致坡镇新时代文明实践所", 19.800, 110.620),
]
# 实践站: those the seed names, and at least one in every institute.
STATIONS = [
    ("hongqi.benli", "红旗镇本立村新时代文明实践站", 19.785, 110.495),
    ("hongqi.daochong", "红旗镇道崇村新时代文明实践站", 19.772, 110.481),
    ("hongqi.tuqiao", "红旗镇土桥社区新时代文明实践站", 19.779, 110.500),
    ("jiazi.xinmin", "甲子镇新民新时代文明实践站", 19.735, 110.405),
    ("yunlong.yunling", "云龙镇云岭新时代文明实践站", 19.835, 110.475),
    ("fucheng.zhongshan", "府城街道中山社区新时代文明实践站", 20.002, 110.351),
    ("binjiang.haidian", "滨江街道海甸社区新时代文明实践站", 20.021, 110.362),
    ("guoxing.dayingshan", "国兴街道大英山社区新时代文明实践站", 20.027, 110.347),
    ("fengxiang.shidi", "凤翔街道湿地公园新时代文明实践站", 19.992, 110.372),
    ("longtang.longtang", "龙塘镇龙塘社区新时代文明实践站", 19.950, 110.432),
    ("sanmenpo.sanmenpo", "三门坡镇三门坡社区新时代文明实践站", 19.722, 110.562),
    ("dapo.dapo", "大坡镇大坡社区新时代文明实践站", 19.702, 110.452),
    ("jiuzhou.jiuzhou", "旧州镇旧州社区新时代文明实践站", 19.832, 110.382),
    ("dazhipo.dazhipo", "大致坡镇大致坡社区新时代文明实践站", 19.802, 110.622),
]
# 服务菜单: the seed's projects, each run by a team at a site.
PROJECTS = [
    ("益·老爸茶宣讲", "theory", "qiongshan", "琼山区理论宣讲志愿服务队", "在老爸茶店里用乡音宣讲政策"),
    ("琼戏台里有讲堂", "culture", "qiongshan", "琼山区文艺志愿服务队", "以琼剧唱段讲新思想、新风尚"),
    ("田螺计划", "education", "qiongshan", "琼山区教育志愿服务队", "为留守儿童提供课业辅导与陪伴"),
    ("足球小将成长计划", "fitness", "qiongshan", "琼山区体育志愿服务队", "为乡村孩子开设足球课"),
    ("红旗小喇叭", "theory", "qiongshan.hongqi", "红旗镇党员志愿服务队", "村广播里的政策与生活小常识"),
    ("红志小导游", "culture", "qiongshan.yunlong", "云龙镇中心小学志愿服务队", "在琼崖红军改编旧址为游客义务讲解"),
    ("雏凤计划", "education", "qiongshan.fengxiang", "凤翔街道志愿服务队", "湿地公园里的生态自然课"),
    ("河小青", "science", "qiongshan.fengxiang", "凤翔街道青年志愿服务队", "三十六曲溪护河与生态科普"),
    ("美丽童画", "culture", "qiongshan.dazhipo", "大致坡镇志愿服务队", "乡村儿童素描艺术课堂"),
    ("长者饭堂健康检查", "health", "qiongshan.hongqi.tuqiao", "土桥社区医疗志愿服务队", "为长者饭堂的老人量血压、做健康咨询"),
]
STAFF = [
    ("13800000001", "区中心 王主任", "qiongshan"),
    ("13800000002", "红旗镇实践所 林所长", "qiongshan.hongqi"),
    ("13800000003", "本立村实践站 吴站长", "qiongshan.hongqi.benli"),
]
COLLECTORS = [("13800000004", "民需快递小哥 陈小哥", "qiongshan.hongqi")]
VOLUNTEERS = [
    ("13900000001", "符志强", "qiongshan.hongqi.benli", ["health", "fitness"], 19.786, 110.496),
    ("13900000002", "王海燕", "qiongshan.hongqi.benli", ["education", "culture"], 19.784, 110.494),
    ("13900000003", "李明", "qiongshan.hongqi.daochong", ["health", "science"], 19.773, 110.482),
    ("13900000004", "陈美玲", "qiongshan.hongqi.tuqiao", ["theory", "culture"], 19.780, 110.501),
    ("13900000005", "吴国栋", "qiongshan.jiazi.xinmin", ["education", "fitness"], 19.736, 110.406),
    ("13900000006", "云小梅", "qiongshan.yunlong.yunling", ["culture", "theory", "health"], 19.836, 110.476),
]
RESIDENTS = [("13700000001", "黄阿婆"), ("13700000002", "林大爷"), ("13700000003", "符小丽")]


class Loader:
    def __init__(self, api):
        self.api = api.rstrip("/")
        self.session = requests.Session()
        self.created = 0

    def call(self, method, path, token=None, ok_if_exists=True, **kwargs):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.session.request(method, self.api + path, headers=headers, timeout=15, **kwargs)
        if response.status_code == 409 and ok_if_exists:
            return None
        if response.status_code >= 400:
            raise SystemExit(f"{method} {path} answered {response.status_code}: {response.text}")
        if response.status_code == 201:
            self.created += 1
        return response.json()

    def token(self, phone, password):
        return self.call("POST", "/auth/token", json={"phone": phone, "password": password})["access_token"]


def load(api, admin_phone=None, admin_password=None):
    loader = Loader(api)
    admin = loader.token(admin_phone or config.get("LASTMILE_ADMIN_PHONE") or ADMIN_PHONE,
                         admin_password or config.get("LASTMILE_ADMIN_PASSWORD") or ADMIN_PASSWORD)
    for site_id, name, lat, lon in [DISTRICT] + [(f"qiongshan.{i}", n, a, o) for i, n, a, o in INSTITUTES] + [
        (f"qiongshan.{i}", n, a, o) for i, n, a, o in STATIONS
    ]:
        loader.call("POST", "/sites", admin, json={"id": site_id, "name": name, "lat": lat, "lon": lon})
    for phone, name, site_id in STAFF:
        loader.call("POST", "/accounts", admin,
                    json={"phone": phone, "password": PASSWORD, "name": name, "role": "staff", "site_id": site_id})
    for phone, name, site_id in COLLECTORS:
        loader.call("POST", "/accounts", admin,
                    json={"phone": phone, "password": PASSWORD, "name": name, "role": "collector", "site_id": site_id})
    existing = {p["name"] for p in loader.call("GET", "/projects")["items"]}
    for name, category, site_id, team, description in PROJECTS:
        if name not in existing:
            loader.call("POST", "/projects", admin, json={"name": name, "category": category, "site_id": site_id,
                                                          "team_name": team, "description": description})
    for phone, name, site_id, skills, lat, lon in VOLUNTEERS:
        loader.call("POST", "/auth/register", json={"phone": phone, "password": PASSWORD, "name": name,
                                                    "role": "volunteer"})
        token = loader.token(phone, PASSWORD)
        loader.call("POST", "/volunteers", token, json={"name": name, "skills": skills, "site_id": site_id,
                                                        "lat": lat, "lon": lon, "phone": phone})
    for phone, name in RESIDENTS:
        loader.call("POST", "/auth/register", json={"phone": phone, "password": PASSWORD, "name": name,
                                                    "role": "resident"})
    print(f"Demo data loaded: {loader.created} new records", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", default=f"http://127.0.0.1:{config.get('LASTMILE_PORT')}/api/v1")
    parser.add_argument("--admin-phone")
    parser.add_argument("--admin-password")
    args = parser.parse_args(argv)
    load(args.api, args.admin_phone, args.admin_password)
    return 0


if __name__ == "__main__":
    sys.exit(main())
