"""Both pumps of an Engine, each in its own thread as `etun run` has them, for tests that drive them."""

import threading


def start_pumps(engine, results: dict | None = None) -> list[threading.Thread]:
    """Both pumps, each in its thread, as `etun run` has them; what each returns goes into
    `results` under "tx" and "rx"."""
    results = {} if results is None else results
    pumps = [threading.Thread(target=lambda: results.__setitem__("tx", engine.run_tx())),
             threading.Thread(target=lambda: results.__setitem__("rx", engine.run_rx()))]
    for p in pumps:
        p.start()
    return pumps


def stop_pumps(engine, pumps) -> None:
    engine.stop()
    for p in pumps:
        p.join(5)
    assert not any(p.is_alive() for p in pumps)
