"""A small salon booking API on loopback: the customer's HTTP API in the demo."""

import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

API_KEY_HEADER = "Authorization"
SLOTS = ["10:00 AM", "11:30 AM", "2:00 PM"]
STYLISTS = ["Ana", "Bea", "Chloe"]


def build_app(api_key: str) -> web.Application:
    @web.middleware
    async def require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get(API_KEY_HEADER) != f"Bearer {api_key}":
            return web.json_response({"error": "unauthorized"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[require_key])
    app.router.add_get("/availability", _availability)
    app.router.add_post("/bookings", _book)
    app.router.add_post("/cancellations", _cancel)
    return app


async def _availability(request: web.Request) -> web.Response:
    date = request.query.get("date", "")
    return web.json_response(
        {"date": date, "service": request.query.get("service"), "slots": SLOTS}
    )


async def _book(request: web.Request) -> web.Response:
    booking = await request.json()
    stylist = STYLISTS[len(booking.get("time", "")) % len(STYLISTS)]
    return web.json_response(
        {
            "success": True,
            "booking_id": f"bk-{secrets.token_hex(3)}",
            "stylist_name": stylist,
            "agent_message": f"You're booked for a {booking.get('service', 'visit')} on "
            f"{booking.get('date')} at {booking.get('time')} with {stylist}.",
        }
    )


async def _cancel(_: web.Request) -> web.Response:
    # The demo's failing call: the booking system is down for maintenance.
    return web.json_response({"error": "maintenance"}, status=503)


class SalonApi:
    def __init__(self, api_key: str) -> None:
        self.runner = web.AppRunner(build_app(api_key), access_log=None)
        self.url = ""

    async def start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        await self.runner.cleanup()
