"""The engine's captioning step: before the dataset is read for training (`dataset.captions: auto`), or as the
whole job (`only`). One process captions; in a data-parallel run the others wait at a barrier, then every
process reads the same caption files."""

from __future__ import annotations

from lorarun.image.engine.caption.run import caption_dataset


def caption_before_training(cfg, accel, events, stop) -> bool:
    """Make the captions; True when that was the whole job (`only`: its terminal event is written here)."""
    report = None
    if accel.is_main_process:
        report = caption_dataset(cfg, events, should_stop=lambda: stop.requested)
    accel.wait_for_everyone()
    if cfg.dataset.captions != "only":
        return False
    written, kept = (report.written, report.kept) if report else (0, 0)
    if stop.requested:
        events.emit("stopped", reason="stopped while captioning", captions=written, kept=kept, total_steps=0)
    else:
        events.emit("finished", captions=written, kept=kept, total_steps=0, step=0)
    return True
