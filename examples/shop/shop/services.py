"""What the shop's views call: enqueue the work of an order, atomically."""

from django.db import transaction

from shop.tasks import charge, place_order, send_confirmation


def checkout(order_id: str, email: str, lines: list[dict], amount_cents: int) -> dict:
    """Enqueue an order's tasks in one transaction; return their handles by name."""
    with transaction.atomic():
        return {
            "order": place_order.enqueue(order_id, lines),
            "charge": charge.using(priority=10).enqueue(order_id, amount_cents),
            "mail": send_confirmation.enqueue(order_id, email=email),
        }
