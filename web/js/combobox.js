// An editable combobox with list autocomplete (WAI-ARIA APG pattern): type to filter the
// server's symbols, arrows to move, Enter to pick, Escape to close (and again to clear).

const MAX_OPTIONS = 50;

export class SymbolCombobox {
  /**
   * @param {HTMLInputElement} input  role="combobox"
   * @param {HTMLElement} listbox  role="listbox"
   * @param {() => {symbol: string, name: string}[]} choices  what may be added now
   * @param {(symbol: string) => void} onPick
   */
  constructor(input, listbox, choices, onPick) {
    this.input = input;
    this.listbox = listbox;
    this.choices = choices;
    this.onPick = onPick;
    this.options = []; // the filtered choices shown
    this.active = -1;
    input.addEventListener("input", () => this.open());
    input.addEventListener("keydown", (ev) => this.key(ev));
    input.addEventListener("blur", () => this.close());
    input.addEventListener("click", () => (this.isOpen() ? this.close() : this.open()));
    // Keep focus in the input while the pointer picks an option.
    listbox.addEventListener("pointerdown", (ev) => ev.preventDefault());
    listbox.addEventListener("click", (ev) => {
      const li = ev.target.closest("[role=option]");
      if (li) this.pick(Number(li.dataset.index));
    });
  }

  isOpen() {
    return this.input.getAttribute("aria-expanded") === "true";
  }

  filter() {
    const q = this.input.value.trim().toLowerCase();
    const starts = [];
    const contains = [];
    for (const c of this.choices()) {
      const sym = c.symbol.toLowerCase();
      if (!q || sym.startsWith(q)) starts.push(c);
      else if (sym.includes(q) || c.name.toLowerCase().includes(q)) contains.push(c);
    }
    return starts.concat(contains).slice(0, MAX_OPTIONS);
  }

  open() {
    this.options = this.filter();
    this.listbox.replaceChildren(
      ...this.options.map((c, i) => {
        const li = document.createElement("li");
        li.id = `add-option-${i}`;
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", "false");
        li.dataset.index = String(i);
        const sym = document.createElement("span");
        sym.className = "opt-sym";
        sym.textContent = c.symbol;
        const name = document.createElement("span");
        name.className = "opt-name";
        name.textContent = c.name;
        li.append(sym, name);
        return li;
      }),
    );
    const any = this.options.length > 0;
    this.listbox.hidden = !any;
    this.input.setAttribute("aria-expanded", String(any));
    // With text typed, the first match is ready for Enter; with none, nothing is.
    this.setActive(any && this.input.value.trim() ? 0 : -1);
  }

  close() {
    this.listbox.hidden = true;
    this.input.setAttribute("aria-expanded", "false");
    this.setActive(-1);
  }

  setActive(i) {
    const prev = this.listbox.children[this.active];
    if (prev) prev.setAttribute("aria-selected", "false");
    this.active = i;
    const li = this.listbox.children[i];
    if (li) {
      li.setAttribute("aria-selected", "true");
      this.input.setAttribute("aria-activedescendant", li.id);
      li.scrollIntoView({ block: "nearest" });
    } else {
      this.input.removeAttribute("aria-activedescendant");
    }
  }

  key(ev) {
    const n = this.options.length;
    switch (ev.key) {
      case "ArrowDown":
        if (!this.isOpen()) this.open();
        else if (n) this.setActive((this.active + 1) % n);
        break;
      case "ArrowUp":
        if (!this.isOpen()) this.open();
        if (this.options.length) this.setActive(this.active <= 0 ? this.options.length - 1 : this.active - 1);
        break;
      case "Enter":
        if (this.isOpen() && this.active >= 0) this.pick(this.active);
        else this.pickTyped();
        break;
      case "Escape":
        if (this.isOpen()) this.close();
        else this.input.value = "";
        break;
      default:
        return;
    }
    ev.preventDefault();
  }

  pick(i) {
    const c = this.options[i];
    if (!c) return;
    this.input.value = "";
    this.close();
    this.onPick(c.symbol);
  }

  /** Enter with the list closed: add the typed symbol if it is an exact match. */
  pickTyped() {
    const q = this.input.value.trim().toLowerCase();
    const c = this.choices().find((x) => x.symbol.toLowerCase() === q);
    if (c) {
      this.input.value = "";
      this.onPick(c.symbol);
    }
  }
}
