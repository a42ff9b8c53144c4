// collabgen view: a read-only page over one out dir (and its eval report, or an eval folder alone).
// Every piece of model or user text is put in the page with textContent (through `el`):
// never as HTML, so a reply holding a script tag or an img onerror shows as the text it is.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const PAGE = 25;

  // ------------------------------------------------------------------ DOM helpers

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "onclick" || key === "onchange" || key === "onsubmit") node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function text(tag, value, className) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    node.textContent = value === null || value === undefined ? "" : String(value);
    return node;
  }

  function num(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "n/a";
    return Number(value).toFixed(digits === undefined ? 3 : digits);
  }

  function table(headers, rows, className) {
    return el("table", { className: className || "grid" },
      el("thead", {}, el("tr", {}, headers.map((h) => text("th", h)))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => (c instanceof Node ? el("td", {}, c) : text("td", c)))))));
  }

  function section(title, ...children) {
    return el("section", { className: "card" }, text("h2", title), ...children);
  }

  // ------------------------------------------------------------------ data sources

  function embedded() {
    const node = document.getElementById("collabgen-data");
    return node ? JSON.parse(node.textContent) : null;
  }

  function serverSource() {
    async function get(path, params) {
      const query = new URLSearchParams();
      for (const [key, value] of Object.entries(params || {})) {
        if (value !== null && value !== undefined && value !== "") query.set(key, value);
      }
      const response = await fetch(path + (query.toString() ? "?" + query : ""), { headers: { Accept: "application/json" } });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      return body;
    }
    return {
      overview: () => get("api/overview"),
      conversations: (filters) => get("api/conversations", filters),
      conversation: (id) => get("api/conversation", { id }),
      evaluation: () => get("api/eval"),
      evalSeed: (index) => get("api/eval/seed", { index }),
    };
  }

  // The exported file filters its embedded rows the way the server does (collabgen/view/data.py).
  function embeddedSource(data) {
    function matches(item, f) {
      if (f.task && item.task !== f.task) return false;
      if (f.failed === "true" && item.status !== "failed") return false;
      if (f.failed === "false" && item.status === "failed") return false;
      if (f.flag && !(item.flags || []).includes(f.flag)) return false;
      if (f.gap_min !== "" || f.gap_max !== "") {
        const low = f.gap_min === "" ? -Infinity : Number(f.gap_min);
        const high = f.gap_max === "" ? Infinity : Number(f.gap_max);
        if (!(item.turn_gaps || []).some((g) => g !== null && g >= low && g <= high)) return false;
      }
      if (f.q) {
        const needle = f.q.toLowerCase();
        const conv = data.conversations[item.conv_id];
        const texts = [item.conv_id];
        for (const turn of (conv && conv.turns) || []) {
          for (const m of turn.new_messages) texts.push(m.content);
          for (const c of turn.candidates) texts.push(c.response);
        }
        if (!texts.some((t) => String(t).toLowerCase().includes(needle))) return false;
      }
      return true;
    }
    return {
      overview: async () => data.overview,
      conversations: async (f) => {
        const all = data.summary.filter((item) => matches(item, f));
        const offset = Number(f.offset || 0);
        const limit = Number(f.limit || PAGE);
        return { total: all.length, offset, limit, items: all.slice(offset, offset + limit) };
      },
      conversation: async (id) => {
        if (!(id in data.conversations)) throw new Error("no conversation " + id);
        return data.conversations[id];
      },
      evaluation: async () => {
        if (!data.eval) throw new Error("no eval report in this file");
        return data.eval;
      },
      evalSeed: async (index) => {
        if (!(String(index) in (data.eval_seeds || {}))) throw new Error("no eval conversation for seed index " + index);
        return data.eval_seeds[String(index)];
      },
    };
  }

  const data = embedded();
  const source = data ? embeddedSource(data) : serverSource();
  const filters = { task: "", failed: "", flag: "", gap_min: "", gap_max: "", q: "", offset: 0, limit: PAGE };

  // ------------------------------------------------------------------ charts

  function barChart(series, edges, width, height) {
    // series: [{name, counts, className}] on shared bins (edges has one more entry than counts).
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("class", "chart");
    svg.setAttribute("role", "img");
    const bins = series.length ? series[0].counts.length : 0;
    const peak = Math.max(1, ...series.flatMap((s) => s.counts));
    const slot = bins ? (width - 10) / bins : 0;
    const bar = slot / Math.max(1, series.length);
    series.forEach((s, k) => {
      s.counts.forEach((count, i) => {
        const h = (count / peak) * (height - 22);
        const rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("x", String(5 + i * slot + k * bar));
        rect.setAttribute("y", String(height - 16 - h));
        rect.setAttribute("width", String(Math.max(1, bar - 1)));
        rect.setAttribute("height", String(h));
        rect.setAttribute("class", s.className);
        const title = document.createElementNS(SVG, "title");
        title.textContent = `${s.name} [${num(edges[i])}, ${num(edges[i + 1])}): ${count}`;
        rect.append(title);
        svg.append(rect);
      });
    });
    if (edges.length) {
      for (const [x, value, anchor] of [[5, edges[0], "start"], [width - 5, edges[edges.length - 1], "end"]]) {
        const label = document.createElementNS(SVG, "text");
        label.setAttribute("x", String(x));
        label.setAttribute("y", String(height - 3));
        label.setAttribute("text-anchor", anchor);
        label.setAttribute("class", "axis");
        label.textContent = num(value);
        svg.append(label);
      }
    }
    return svg;
  }

  function histogramBlock(title, series, edges) {
    const legend = el("div", { className: "legend" },
      series.map((s) => el("span", { className: "key " + s.className }, `${s.name} (${s.counts.reduce((a, b) => a + b, 0)})`)));
    return el("figure", { className: "hist" }, text("figcaption", title), barChart(series, edges, 320, 120), legend);
  }

  // ------------------------------------------------------------------ overview

  function renderOverview(o) {
    const root = el("div", { id: "overview" });
    document.getElementById("run").textContent =
      `${o.out_dir} · task ${o.task ?? "?"} · collabgen ${o.collabgen_version ?? "?"}` +
      (o.complete === false ? ` · incomplete${o.interrupted ? " (" + o.interrupted + ")" : ""}` : "");

    const countRows = ["pairs", "sft", "candidates"].map((c) => {
      const same = o.in_shards[c] === o.counts[c];
      return [c, el("span", { className: same ? "" : "bad", "data-count": c }, String(o.in_shards[c])), String(o.counts[c])];
    });
    const other = ["seeds", "conversations_ok", "conversations_failed", "conversations_unfinished", "turns"]
      .map((k) => [k.replaceAll("_", " "), el("span", { "data-count": k }, String(o.counts[k])), String(o.counts[k])]);
    root.append(section("Counts", table(["what", "in shards", "manifest"], [...countRows, ...other], "grid counts")));

    const failures = o.failure_reasons.length
      ? table(["reason", "conversations", "e.g."], o.failure_reasons.map((r) => [r.reason, String(r.count),
        o.failures.filter((f) => (f.reason || "unknown") === r.reason).slice(0, 3).map((f) => f.conv_id).join(", ")]))
      : text("p", "none", "good");
    root.append(section(`Failures (${o.failures.length})`, failures));

    const flagRows = [
      ...Object.entries(o.flags || {}).map(([k, v]) => ["manifest", k, String(v)]),
      ["manifest", "conversations_context_exhausted", String(o.counts.conversations_context_exhausted ?? 0)],
      ...Object.entries(o.row_flags.candidates).map(([k, v]) => ["candidates", k, String(v)]),
      ...Object.entries(o.row_flags.futures).map(([k, v]) => ["futures", k, String(v)]),
    ];
    root.append(section("Flags", flagRows.length ? table(["where", "flag", "count"], flagRows) : text("p", "none")));

    const hists = el("div", { className: "hists" }, o.histograms.map((h) => histogramBlock(
      h.metric === "MR" ? "MR (multiturn-aware reward)" : h.metric,
      [{ name: "all candidates", counts: h.all.counts, className: "s-all" },
        { name: "chosen", counts: h.chosen.counts, className: "s-chosen" }], h.all.edges)));
    root.append(section("MR and metrics of candidates", hists));

    const pairBlocks = [histogramBlock("gap (chosen MR - rejected MR)",
      [{ name: "pairs", counts: o.gaps.gap.counts, className: "s-gap" }], o.gaps.gap.edges)];
    if (o.gaps.confidence) {
      pairBlocks.push(histogramBlock("confidence P(chosen better)",
        [{ name: "pairs", counts: o.gaps.confidence.counts, className: "s-conf" }], o.gaps.confidence.edges));
    }
    const conf = o.confidence && o.confidence.quartiles
      ? text("p", `confidence quartiles ${o.confidence.quartiles.map((q) => num(q)).join(" / ")}; ` +
        Object.entries(o.confidence.at_least).map(([k, v]) => `≥${k}: ${v}`).join(", "))
      : null;
    root.append(section(`Pairs (min gap ${o.min_gap ?? "n/a"})`, el("div", { className: "hists" }, pairBlocks), conf));

    root.append(section("By turn", table(["turn", "conversations", "chosen mean MR", "proactive winners"],
      o.by_turn.map((t) => [String(t.turn), String(t.conversations), num(t.mean_chosen_mr), `${num(100 * t.proactive_share, 0)}%`]))));

    const roles = Object.entries(o.usage.by_role);
    const cost = o.cost_usd || {};
    const usage = roles.length ? table(["role", "calls", "cached", "prompt tokens", "completion tokens", "retries", "failures", "cost (USD)"],
      roles.map(([role, t]) => [role, String(t.calls), String(t.cached_calls), String(t.prompt_tokens), String(t.completion_tokens),
        String(t.retries), String(t.failures), role in cost ? num(cost[role], 4) : "unknown"])) : text("p", "no usage recorded");
    const stages = [];
    for (const [role, by] of Object.entries(o.usage.by_stage)) {
      for (const [stage, t] of Object.entries(by)) stages.push([role, stage, String(t.calls), String(t.prompt_tokens), String(t.completion_tokens)]);
    }
    root.append(section("Tokens and cost", usage,
      text("p", `calls per finished conversation: ${o.usage.calls_per_conversation ?? "n/a"}`),
      stages.length ? table(["role", "stage", "calls", "prompt tokens", "completion tokens"], stages) : null));
    return root;
  }

  // ------------------------------------------------------------------ the list

  function filterForm(o, onChange) {
    const select = (name, options) => {
      const node = el("select", { name, onchange: (e) => { filters[name] = e.target.value; filters.offset = 0; onChange(); } },
        options.map(([value, label]) => el("option", { value, selected: filters[name] === value }, label)));
      return el("label", {}, name + " ", node);
    };
    const flags = [...new Set([...Object.keys(o.row_flags.candidates), ...Object.keys(o.row_flags.futures)])];
    const input = (name, type, placeholder) => el("label", {}, name.replace("_", " ") + " ",
      el("input", { name, type, placeholder, value: filters[name], step: type === "number" ? "any" : null }));
    const form = el("form", {
      id: "filters",
      onsubmit: (e) => {
        e.preventDefault();
        for (const name of ["gap_min", "gap_max", "q"]) filters[name] = form.elements[name].value;
        filters.offset = 0;
        onChange();
      },
    },
    select("task", [["", "any"], ...o.tasks.map((t) => [t, t])]),
    select("failed", [["", "any"], ["true", "failed"], ["false", "not failed"]]),
    select("flag", [["", "any"], ...flags.map((f) => [f, f])]),
    input("gap_min", "number", "min"), input("gap_max", "number", "max"), input("q", "search", "text search"),
    el("button", { type: "submit" }, "apply"));
    return form;
  }

  async function renderList(container, o) {
    const page = await source.conversations(filters);
    const rows = page.items.map((item) => {
      const link = el("a", { href: "#/conv/" + encodeURIComponent(item.conv_id), className: "conv-link" }, item.conv_id);
      const gaps = (item.turn_gaps || []).map((g) => num(g)).join(" ");
      return [link, item.task ?? "", item.status, String(item.turns), String(item.candidates), String(item.pairs),
        num(item.mean_chosen), gaps, (item.flags || []).join(", "), item.reason ?? ""];
    });
    const first = page.total ? page.offset + 1 : 0;
    const last = Math.min(page.offset + page.limit, page.total);
    const nav = el("div", { className: "pager" },
      el("button", { id: "prev", disabled: page.offset <= 0, onclick: () => { filters.offset = Math.max(0, page.offset - page.limit); redraw(); } }, "‹ prev"),
      el("span", { id: "list-total", "data-total": page.total }, `${first}–${last} of ${page.total}`),
      el("button", { id: "next", disabled: last >= page.total, onclick: () => { filters.offset = page.offset + page.limit; redraw(); } }, "next ›"));
    const list = table(["conversation", "task", "status", "turns", "candidates", "pairs", "chosen mean MR", "turn gaps", "flags", "failure"], rows, "grid conv-list");
    container.replaceChildren(nav, list);
    function redraw() { renderList(container, o).catch(showError); }
  }

  // ------------------------------------------------------------------ one conversation

  function messageBlock(m) {
    return el("div", { className: "msg " + (m.role === "user" ? "user" : m.role === "assistant" ? "assistant" : "system") },
      text("span", m.role, "role"), text("div", m.content, "content"));
  }

  function metricsText(metrics) {
    return Object.entries(metrics || {}).map(([k, v]) => `${k} ${num(v)}`).join(" · ");
  }

  function candidateBlock(c, metricNames) {
    const kind = c.reused ? "reused" : c.proactive ? "proactive" : "plain";
    const mark = c.chosen ? "chosen" : c.rejected ? "rejected" : "";
    const flags = [...(c.truncated ? ["truncated"] : []), ...(c.tampered ? ["tampered"] : []), ...c.flags];
    const futures = c.futures.map((f, i) => el("details", { className: "future" },
      el("summary", {}, `future ${i + 1}/${c.futures.length}: MR ${num(f.score)} · ${metricsText(f.metrics)}` +
        (f.terminated ? " · user ended the chat" : "") + (f.truncated ? " · truncated" : "") +
        (f.flags.length ? " · " + f.flags.join(", ") : "")),
      f.messages.map(messageBlock)));
    return el("div", { className: "candidate " + mark, "data-candidate": c.candidate },
      el("div", { className: "cand-head" },
        text("strong", `#${c.candidate}`),
        mark ? text("span", mark, "tag " + mark) : null,
        text("span", kind, "tag kind"),
        text("span", `MR ${num(c.score)}` + (c.score_se !== null && c.score_se !== undefined ? ` ± ${num(c.score_se)}` : ""), "mr"),
        text("span", metricNames.map((m) => `${m} ${num(c.metrics[m])}`).join(" · "), "metrics"),
        text("span", `${c.tokens ?? "?"} tokens`, "dim"),
        flags.length ? text("span", flags.join(", "), "tag flag") : null),
      text("div", c.response, "content response"),
      c.futures.length ? el("div", { className: "futures" }, futures) : null);
  }

  function pairLine(p) {
    return text("li", `pair: #${p.chosen ?? "?"} (MR ${num(p.score_chosen)}${p.proactive_chosen ? ", proactive" : ""}) over ` +
      `#${p.rejected ?? "?"} (MR ${num(p.score_rejected)}${p.proactive_rejected ? ", proactive" : ""}); gap ${num(p.gap)}` +
      (p.gap_se !== null && p.gap_se !== undefined ? ` ± ${num(p.gap_se)}` : "") +
      (p.confidence !== null && p.confidence !== undefined ? `, confidence ${num(p.confidence)}` : ""), "pair");
  }

  function renderConversation(c) {
    const metricNames = c.turns.length && c.turns[0].candidates.length ? Object.keys(c.turns[0].candidates[0].metrics) : [];
    const head = section(`Conversation ${c.conv_id}`,
      el("p", {}, el("a", { href: "#/", id: "back" }, "← all conversations")),
      text("p", `task ${c.task ?? "?"} · ${c.turns.length} turns · ${c.status}` + (c.reason ? `: ${c.reason}` : ""),
        c.status === "failed" ? "bad status" : "status"),
      c.sft ? text("p", `SFT row: ${c.sft.turns} turns, mean MR ${num(c.sft.mean_score)}, final MR ${num(c.sft.final_score)}`) : null);
    const turns = c.turns.map((t) => el("section", { className: "card turn", "data-turn": t.turn },
      text("h3", `turn ${t.turn}`),
      t.new_messages.length < t.prompt_length ? text("p", `… ${t.prompt_length - t.new_messages.length} earlier messages`, "dim") : null,
      t.new_messages.map(messageBlock),
      el("div", { className: "candidates" }, t.candidates.map((cand) => candidateBlock(cand, metricNames))),
      text("p", t.verdict, "verdict"),
      t.pairs.length ? el("ul", { className: "pairs" }, t.pairs.map(pairLine)) : null));
    return el("div", { id: "conversation" }, head, turns);
  }

  // ------------------------------------------------------------------ the eval report

  // Every number is report.json's (collabgen/output/eval_report.py): shown, never recomputed.
  function interval(stat) {
    return stat ? `${num(stat.mean)} [${num(stat.low)}, ${num(stat.high)}]` : "n/a";
  }

  function statTable(className, headers, rows) {
    // rows: [{key, cells}]; a row's key names it (data-row) so a reader can find a policy's line.
    return el("table", { className: "grid " + className },
      el("thead", {}, el("tr", {}, headers.map((h) => text("th", h)))),
      el("tbody", {}, rows.map((row) => el("tr", { "data-row": row.key },
        row.cells.map((c) => (c instanceof Node ? el("td", {}, c) : text("td", c)))))));
  }

  function renderEvaluation(e) {
    const r = e.report;
    const metrics = r.metrics;
    const policies = statTable("eval-policies", ["policy", "model", "n", "failed", ...metrics],
      Object.entries(r.policies).map(([name, p]) => ({ key: name,
        cells: [name, p.model ?? "", String(p.conversations), String(p.failed), ...metrics.map((m) => interval(p.metrics[m]))] })));
    const paired = Object.keys(r.paired).length
      ? statTable("eval-paired", ["comparison", "seeds", ...metrics], Object.entries(r.paired).map(([label, d]) => ({ key: label,
        cells: [label, String(d.seeds), ...metrics.map((m) => interval(d.metrics[m]))] })))
      : text("p", "one policy: no paired differences", "dim");
    const names = Object.keys(r.policies);
    const seeds = statTable("eval-seeds", ["seed", "conversation", ...names], e.seeds.map((s) => ({ key: String(s.index),
      cells: [el("a", { href: "#/eval/seed/" + s.index, className: "seed-link" }, `seed ${s.index}`), s.conv_id,
        ...names.map((n) => {
          const p = s.policies[n];
          if (!p) return "—";
          return p.status === "ok" ? metrics.map((m) => `${m} ${num(p.metrics[m])}`).join(" · ") : p.status;
        })] })));
    const pinned = r.pinned || {};
    const prompts = Object.entries(r.policies).filter(([, p]) => p.system_prompt);
    const box = section("Evaluation",
      text("p", `${e.dir} · task ${r.task ?? "?"}`, "dim"),
      e.stale ? text("p", "the log holds conversations this report does not count (an eval still running or stopped " +
        "before its report); run `collabgen eval` again to update it", "bad stale") : null,
      text("h3", "Mean and 95% bootstrap interval per policy"), policies,
      text("h3", `Paired differences on the same seeds (against ${names[0] ?? "?"})`), paired,
      prompts.length ? el("details", { className: "prompts" }, text("summary", "system prompts (sampling)"),
        prompts.map(([name, p]) => el("div", { className: "msg system" }, text("span", name, "role"),
          text("div", p.system_prompt, "content")))) : null,
      text("p", `pinned: user simulator ${pinned.user ? pinned.user.model : "?"}, judge ${pinned.judge ? pinned.judge.model : "?"}, ` +
        `eval seed ${pinned.eval_seed ?? "?"}, ${pinned.bootstrap_resamples ?? "?"} bootstrap resamples, ` +
        `at most ${pinned.max_turns ?? "?"} turns`, "dim"),
      text("h3", `Seeds (${e.seeds.length}): click one to read the policies' conversations side by side`), seeds);
    box.id = "evaluation";
    return box;
  }

  function renderEvalSeed(s) {
    const columns = s.policies.map((p) => el("div", { className: "policy-col", "data-policy": p.policy },
      text("h3", p.policy),
      text("p", p.status + (p.reason ? `: ${p.reason}` : ""), p.status === "ok" ? "status" : "bad status"),
      text("p", s.metrics.filter((m) => m in p.metrics).map((m) => `${m} ${num(p.metrics[m])}`).join(" · "), "metrics"),
      p.messages.map(messageBlock)));
    return el("div", { id: "eval-seed" },
      section(`Seed ${s.index} · ${s.conv_id}`,
        el("p", {}, el("a", { href: "#/", id: "back" }, "← evaluation")),
        el("div", { className: "policy-cols" }, columns)));
  }

  // ------------------------------------------------------------------ routing

  function showError(err) {
    document.getElementById("app").replaceChildren(text("p", "error: " + (err && err.message ? err.message : err), "bad"));
  }

  let overviewCache = null;

  async function route() {
    const app = document.getElementById("app");
    const hash = location.hash || "#/";
    try {
      if (!overviewCache) overviewCache = await source.overview();
      if (hash.startsWith("#/eval/seed/")) {
        const index = decodeURIComponent(hash.slice("#/eval/seed/".length));
        app.replaceChildren(renderEvalSeed(await source.evalSeed(index)));
        window.scrollTo(0, 0);
        return;
      }
      if (hash.startsWith("#/conv/")) {
        const id = decodeURIComponent(hash.slice("#/conv/".length));
        app.replaceChildren(renderConversation(await source.conversation(id)));
        window.scrollTo(0, 0);
        return;
      }
      if (!data) overviewCache = await source.overview(); // reread: a finished run's new shards
      const evaluation = overviewCache.eval ? renderEvaluation(await source.evaluation()) : null;
      if (!overviewCache.run) { // an eval folder alone: its report is the whole page
        document.getElementById("run").textContent = `${overviewCache.out_dir} · eval`;
        app.replaceChildren(el("div", { id: "overview" }, evaluation));
        return;
      }
      const listBox = el("div", { id: "list" });
      const redraw = () => renderList(listBox, overviewCache).catch(showError);
      const overview = renderOverview(overviewCache);
      const conversations = section("Conversations", filterForm(overviewCache, redraw), listBox);
      conversations.id = "conversations";
      // Counts and failures first, then the list, then the charts and tables.
      overview.insertBefore(conversations, overview.children[2] || null);
      if (evaluation) overview.prepend(evaluation); // an eval next to the run: its report first
      app.replaceChildren(overview);
      await renderList(listBox, overviewCache);
    } catch (err) {
      showError(err);
    }
  }

  window.addEventListener("hashchange", route);
  route();
})();
