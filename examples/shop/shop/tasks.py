"""The shop's tasks: declared with ``@task``, found by ATP's autodiscovery."""

import asyncio

from atp import task


@task(max_retries=0)
def reserve(sku: str, quantity: int) -> dict:
    """Reserve stock for one order line."""
    return {"sku": sku, "reserved": quantity}


@task(takes_status=True, timeout=600)
def place_order(task_status, order_id: str, lines: list[dict]) -> dict:
    """Reserve every line (one task each) and return the order's summary."""
    for done, line in enumerate(lines, start=1):
        reserve.enqueue(line["sku"], line["quantity"])
        task_status.set_progress(done, len(lines), f"reserved {line['sku']}")
    return {"order": order_id, "lines": len(lines)}


@task
async def send_confirmation(order_id: str, email: str) -> str:
    """Send the confirmation mail (an async task: it waits on I/O)."""
    await asyncio.sleep(0)  # the SMTP round trip would be here
    return f"order {order_id} confirmed to {email}"


@task
def charge(order_id: str, amount_cents: int) -> int:
    """Charge the customer; refuses an empty amount."""
    if amount_cents <= 0:
        raise ValueError(f"order {order_id}: nothing to charge")
    return amount_cents
