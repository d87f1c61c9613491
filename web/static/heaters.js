/* Heaters: names, colours and order, and a card's heater rows with their target forms. */

import { fromTemplate, placeInOrder, safeId, setAttr, setData, setText } from "./dom.js";
import { fmt } from "./format.js";

const HEATER_COLORS = {
  tool0: "#c5221f", tool1: "#e37400", tool2: "#8430ce", tool3: "#b0006d",
  bed: "#1a73e8", chamber: "#188038",
};
const OTHER_COLORS = ["#5f6368", "#00796b", "#795548", "#3949ab"];
const CONTROLLABLE = /^(tool\d+|bed|chamber)$/;
const ORDER = ["bed", "chamber", "probe", "cooler", "board", "soc", "ambient", "redundant"];

function heaterRank(name) {
  const tool = /^tool(\d+)$/.exec(name);
  if (tool) return Number(tool[1]);
  const index = ORDER.indexOf(name);
  return 100 + (index < 0 ? ORDER.length : index);
}

export const isTool = (name) => /^tool\d+$/.test(name);

export function sortHeaters(names) {
  return [...names].sort((a, b) => heaterRank(a) - heaterRank(b) || a.localeCompare(b));
}

export function heaterLabel(name, toolCount) {
  const tool = /^tool(\d+)$/.exec(name);
  if (tool) return toolCount > 1 ? `Hotend T${tool[1]}` : "Hotend";
  return name.charAt(0).toUpperCase() + name.slice(1);
}

export function heaterColor(name) {
  if (HEATER_COLORS[name]) return HEATER_COLORS[name];
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return OTHER_COLORS[hash % OTHER_COLORS.length];
}

/**
 * One row per heater, keyed by heater name. Live readings update the text beside
 * the form; what someone types into a target field is theirs: a reading never
 * writes its value (only the placeholder, and not while it has focus).
 */
export class HeaterRows {
  /**
   * @param {HTMLElement} container
   * @param {{idPrefix: string, printer: string, setTarget: (heater: string, value: number, input: HTMLInputElement) => void,
   *          status: (text: string, isError?: boolean) => void}} options
   */
  constructor(container, options) {
    this.container = container;
    this.options = options;
    this.rows = new Map();
  }

  get toolCount() {
    return [...this.rows.keys()].filter(isTool).length;
  }

  label(name) {
    return heaterLabel(name, this.toolCount);
  }

  row(name) {
    let row = this.rows.get(name);
    if (row) return row;
    const root = fromTemplate("heater-template");
    root.dataset.heater = name;
    root.style.setProperty("--swatch", heaterColor(name));
    row = {
      root,
      name: root.querySelector(".heater-name"),
      actual: root.querySelector(".heater-actual"),
      target: root.querySelector(".heater-target"),
      power: root.querySelector(".heater-power"),
      form: root.querySelector(".heater-set"),
      input: root.querySelector(".heater-input"),
      labelNode: root.querySelector(".heater-label"),
      off: root.querySelector(".heater-off"),
    };
    const inputId = `${this.options.idPrefix}-heater-${safeId(name)}`;
    row.input.id = inputId;
    row.labelNode.htmlFor = inputId;
    if (!CONTROLLABLE.test(name)) {
      row.form.remove();
      row.form = null;
    } else {
      const input = row.input;
      input.max = name === "bed" ? "150" : name === "chamber" ? "90" : "450";
      row.form.addEventListener("submit", (event) => {
        event.preventDefault();
        const value = Number(input.value);
        if (input.value === "" || !isFinite(value) || value < 0 || value > Number(input.max)) {
          this.options.status(`Enter a target between 0 and ${input.max} °C.`, true);
          input.focus();
          return;
        }
        this.options.setTarget(name, value, input);
      });
      row.off.addEventListener("click", () => this.options.setTarget(name, 0, null));
    }
    this.rows.set(name, row);
    placeInOrder(this.container, sortHeaters(this.rows.keys()).map((heater) => this.rows.get(heater).root));
    this.relabel();
    return row;
  }

  relabel() {
    for (const [name, row] of this.rows) {
      const label = this.label(name);
      setText(row.name, label);
      if (row.form) {
        setText(row.labelNode, `${label} target in °C for ${this.options.printer}`);
        setAttr(row.off, "aria-label", `Turn ${label.toLowerCase()} off`);
      }
    }
  }

  /** `heaters`: {name: {actual, target, power}} from a temperature frame or summary. */
  show(heaters) {
    for (const [name, reading] of Object.entries(heaters)) {
      if (!reading || typeof reading !== "object") continue;
      const row = this.row(name);
      setText(row.actual, fmt.temp(reading.actual));
      const target = reading.target;
      setText(row.target, target == null ? "" : target > 0 ? `→ ${fmt.temp(target)}` : "off");
      setData(row.root, "target", target == null ? "" : String(target));
      setText(row.power, reading.power == null ? "" : `power ${fmt.pct((reading.power / 127) * 100)}`);
      if (row.form && target != null && document.activeElement !== row.input) {
        setAttr(row.input, "placeholder", String(Math.round(target)));
      }
    }
  }

  gcodeForTarget(heater, value) {
    const v = Math.round(value);
    if (heater === "bed") return `M140 S${v}`;
    if (heater === "chamber") return `M141 S${v}`;
    const tool = /^tool(\d+)$/.exec(heater);
    return this.toolCount > 1 ? `M104 T${tool[1]} S${v}` : `M104 S${v}`;
  }
}
