// What the page shows of a generation answer: its one-line summary and its files as download links.

/** A link that downloads `data` (bytes or a string) as a file `name` of media `type`. */
export function downloadLink(data, name, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([data], { type }));
  a.download = name;
  a.textContent = `download ${name}`;
  return a;
}

/** "<model_id>: <made> in N s", saying so when the answer came from demo weights (`subject`: what means nothing). */
export function answerSummary(answer, made, subject) {
  const demo = answer.demo ? ` (demo weights: random, ${subject} nothing)` : "";
  return `${answer.model_id}: ${made} in ${(answer.timings_ms.total / 1000).toFixed(1)} s${demo}`;
}
