"""志愿服务证明 as a PDF, drawn with reportlab's built-in Chinese font (STSong-Light),
which needs no font file on the machine."""
import io

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

FONT = "STSong-Light"
pdfmetrics.registerFont(UnicodeCIDFont(FONT))


def render_pdf(certificate, issuing_site_name=None):
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4)
    page.setTitle(f"志愿服务证明 {certificate['certificate_number']}")
    width, height = A4
    y = height - 30 * mm

    def line(text, size=11, gap=7 * mm, x=25 * mm):
        nonlocal y
        if y < 25 * mm:
            page.showPage()
            y = height - 25 * mm
        page.setFont(FONT, size)
        page.drawString(x, y, text)
        y -= gap

    page.setFont(FONT, 20)
    page.drawCentredString(width / 2, y, "志愿服务证明")
    y -= 14 * mm
    volunteer, period = certificate["volunteer"], certificate["period"]
    line(f"证明编号：{certificate['certificate_number']}")
    line(f"志愿者：{volunteer['name']}    志愿者编号：{volunteer['number']}")
    if volunteer.get("id_number"):
        line(f"身份证号：{volunteer['id_number']}")
    line(f"期间：{period['from'] or '注册起'} 至 {period['to'] or '今'}")
    line(f"志愿服务时长合计：{certificate['total_hours']:g} 小时"
         f"（服务记录 {certificate['service_hours']:g} 小时，补录与更正 {certificate['adjustment_hours']:g} 小时）",
         gap=10 * mm)
    line("服务记录：", size=12)
    for service in certificate["services"]:
        line(f"{service['date']}  {service['title']}  {service['hours']:g} 小时  "
             f"服务 {service['beneficiaries_served'] or 0} 人  地点 {service['site_id']}", size=10, gap=6 * mm)
    for adjustment in certificate["adjustments"]:
        kind = "补录" if adjustment["kind"] == "backfill" else "更正"
        line(f"{adjustment['date']}  {kind}  {adjustment['hours']:g} 小时", size=10, gap=6 * mm)
    y -= 6 * mm
    line(f"出具单位：{issuing_site_name or certificate['issuing_site_id']}")
    line(f"出具日期：{certificate['issued_at'][:10]}")
    line(f"核验：GET /api/v1/certificates/{certificate['certificate_number']}", size=9)
    page.showPage()
    page.save()
    return buffer.getvalue()
