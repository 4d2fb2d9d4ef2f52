"""Dev-only routes (create_app(dev=True)): arm faults on internal callbacks, read what was received."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from services.gallery.auth import require_internal
from services.gallery.faults import CallbackLog, FaultInjector
from services.gallery.schemas import FaultIn

router = APIRouter(prefix="/_dev", dependencies=[Depends(require_internal)], tags=["dev"])


@router.post("/faults")
def set_fault(body: FaultIn, request: Request) -> dict[str, Any]:
    """Next `count` internal callbacks (0: all until cleared) sleep `delay_s`, then answer `status`."""
    faults: FaultInjector = request.app.state.faults
    fault = faults.set(body.status, body.count, body.delay_s, body.only)
    return {"fault": fault.as_dict() if fault else None}


@router.get("/faults")
def get_fault(request: Request) -> dict[str, Any]:
    """The armed fault, if any."""
    fault = request.app.state.faults.current()
    return {"fault": fault.as_dict() if fault else None}


@router.get("/received")
def received(request: Request) -> list[dict[str, Any]]:
    """Every internal callback so far: {"path", "status", "body"} in order."""
    log: CallbackLog = request.app.state.callback_log
    return log.items()


@router.delete("/received", status_code=204)
def clear_received(request: Request) -> None:
    """Forget the recorded callbacks."""
    request.app.state.callback_log.clear()
