"""The HTTP baseline: the same route as the ingest, doing nothing but reading the body.

Served by uvicorn exactly like the product API (``--log-level warning --no-access-log``, same
event loop and HTTP parser), it measures what one uvicorn + FastAPI process on this machine can
take with the same bodies and the same load generator, so ``http.ratio`` is the share of that
ceiling the real ingest (auth, decode, validation, Kafka produce with acks=all) achieves.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

app = FastAPI(title="bare ingest baseline", openapi_url=None, docs_url=None, redoc_url=None)

_ACCEPTED = b'{"status":"accepted"}'


@app.post("/v1/telemetry", status_code=202)
async def ingest(request: Request) -> Response:
    body = await request.body()
    if not body:
        return Response(b'{"error":"empty"}', status_code=422, media_type="application/json")
    return Response(_ACCEPTED, status_code=202, media_type="application/json")


# A partner score item as the API serialises it (1.3 KB), and a signature header of the same
# length as a real one: fixed bytes, no auth, no database, no signing.
_UBI_ITEM = (
    b'{"subject":"p_aaaaaaaaaaaaaaaaaaaaaaaaaa","purpose":"ubi",'
    b'"consent_expires_at":"2027-02-20T08:36:55.810938Z","period_days":30,'
    b'"period_start":"2026-10-23T08:36:55.623000Z","period_end":"2026-11-22T08:36:55.623000Z",'
    b'"score":74.37,"score_low":58.39,"score_high":90.35,"data_sufficient":true,'
    b'"score_version":"ubi-1.0","computed_at":"2026-11-22T08:36:55.810802Z","confidence":0.95,'
    b'"credibility":0.3662,"sub_scores":{"braking":50.04,"acceleration":89.1,"cornering":89.1,'
    b'"speeding":63.68,"night":95.66},"exposure":{"distance_km":288.908,"hours":7.167,'
    b'"trips":11,"speeding_share":0.0451,"night_share":0.0089},"event_counts":'
    b'{"harsh_braking":5,"harsh_acceleration":1,"harsh_cornering":1},"weighted_event_counts":'
    b'{"harsh_braking":10,"harsh_acceleration":1,"harsh_cornering":1},"rates_per_100km":'
    b'{"harsh_braking":3.461,"harsh_acceleration":0.346,"harsh_cornering":0.346},"reasons":'
    b'[{"code":"HARSH_BRAKING","points_lost":5.49,"text":"Harsh braking: 5 events '
    b'(severity-weighted 10) in 288.9 km, 3.46 per 100 km, cost 5.49 points."},'
    b'{"code":"SPEEDING","points_lost":2.66,"text":"Speeding during 4.5 % of moving time cost '
    b'2.66 points."},{"code":"HARSH_ACCELERATION","points_lost":0.8,"text":"Harsh acceleration: '
    b'1 event (severity-weighted 1) in 288.9 km, 0.35 per 100 km, cost 0.80 points."}],'
    b'"insufficient_reasons":[],"disputed_trips":0}'
)
_SIGNATURE = (
    "eyJhbGciOiJFZERTQSIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il0sImtpZCI6InRNWVFtaHVPV0VRdzJlYVhtV3R1"
    "WUZMclhaVUQ4REtfZVhlRTJPeTVyUzgifQ..zLJqIfe_r4lJPmqKT6xjHJJQo5ZTXL8xtqUiqbRgXgcp_xVqrew8sfdi"
    "9ne3LEnwrR21uCBz2rfyIDFiEY8lCA"
)


@app.get("/v1/partner/ubi/scores/{subject}")
async def partner_ubi_score(subject: str) -> Response:
    """Baseline of the partner item read (``loadtest/bench_partner.py``): the path parameter is
    parsed, the body and headers are constant."""
    return Response(
        _UBI_ITEM,
        media_type="application/json",
        headers={"X-Fleet-Signature": _SIGNATURE, "Cache-Control": "no-store"},
    )


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}
