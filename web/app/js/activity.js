// Is this device idle? Hidden tab, or no input for IDLE_AFTER_MS (docs/protocol.md §4.9).

const IDLE_AFTER_MS = 5 * 60 * 1000;

export class Activity {
  /** @param {(idle: boolean) => void} changed */
  constructor(changed) {
    this.changed = changed;
    this.idle = document.visibilityState === "hidden";
    this.lastInput = Date.now();
    const input = () => {
      this.lastInput = Date.now();
      this.update();
    };
    for (const type of ["keydown", "pointerdown", "pointermove", "wheel", "touchstart"]) {
      window.addEventListener(type, input, { passive: true });
    }
    document.addEventListener("visibilitychange", () => this.update());
    setInterval(() => this.update(), 15000);
  }

  update() {
    const idle = document.visibilityState === "hidden" || Date.now() - this.lastInput > IDLE_AFTER_MS;
    if (idle !== this.idle) {
      this.idle = idle;
      this.changed(idle);
    }
  }
}
