// Helpers the log page (web/app.js) and the admin console (web/admin/*.js) share,
// loaded before either: DOM nodes built with text only, and money shown to people.
// Money arrives as decimal strings with 9 decimals and is rounded in integers
// (BigInt nano-dollars), never through floats.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const int = (n) => Number(n || 0).toLocaleString();

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

// ---- formatting -----------------------------------------------------------------

// Money arrives as decimal strings with 9 decimals. usd() is the exact amount, zeros
// trimmed as text but cents kept: "10.000000000" -> "$10.00", "0.029347113" ->
// "$0.029347113"; it is what a hover shows (and the CSV keeps).
function usd(value) {
  if (value === null || value === undefined) return "no budget";
  const text = String(value);
  const sign = text.startsWith("-") ? "-" : "";
  const [whole, frac = ""] = text.replace(/^-/, "").split(".");
  return sign + "$" + whole + "." + frac.replace(/0+$/, "").padEnd(2, "0");
}

// "12.345678900" -> 12345678900n nano-dollars: rounding is done in integers, so no
// amount is ever shown a cent off by float drift.
function nano(value) {
  const text = String(value ?? "0");
  const [whole, frac = ""] = text.replace(/^-/, "").split(".");
  const n = BigInt(whole || "0") * 1000000000n + BigInt((frac + "000000000").slice(0, 9));
  return text.startsWith("-") ? -n : n;
}

// Money for people, rounded half up: $1 and more to the cent ("$1,234.57"), less than
// $1 to two significant digits, trailing zeros after the cents dropped ("$0.43",
// "$0.029", "$0.001", "$0.0000045"), nothing as "$0.00".
function money(value) {
  if (value === null || value === undefined) return "no budget";
  let n = nano(value);
  const sign = n < 0n ? "-" : "";
  if (n < 0n) n = -n;
  if (n === 0n) return "$0.00";
  let decimals = n >= 1000000000n ? 2 : Math.min(9, Math.max(2, 11 - n.toString().length));
  const unit = 10n ** BigInt(9 - decimals);
  let rounded = (n + unit / 2n) / unit;
  if (decimals > 2 && rounded >= 100n) { rounded /= 10n; decimals -= 1; } // $0.0996 -> $0.10
  const digits = rounded.toString().padStart(decimals + 1, "0");
  const whole = digits.slice(0, -decimals).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const frac = digits.slice(-decimals).replace(/0+$/, "").padEnd(2, "0"); // $0.0010 -> $0.001
  return `${sign}$${whole}.${frac}`;
}
