// The entry of the vendored editor bundle (../vendor/codemirror.js): a
// CodeMirror 6 editor with Python highlighting for the console's command
// box, and a static highlighter for code shown in replies. Exposes
// window.TradeboxEditor = { create, highlight }. Built by ../build-editor.sh.

import {
  EditorView, keymap, placeholder as placeholderText, drawSelection,
  highlightSpecialChars, dropCursor,
} from "@codemirror/view";
import { EditorState, Prec } from "@codemirror/state";
import {
  defaultKeymap, history, historyKeymap, indentWithTab, insertNewlineAndIndent,
} from "@codemirror/commands";
import {
  syntaxHighlighting, indentOnInput, bracketMatching, indentUnit,
} from "@codemirror/language";
import { python, pythonLanguage } from "@codemirror/lang-python";
import { highlightCode, classHighlighter } from "@lezer/highlight";

// Options:
//   parent       the element to mount into
//   doc          initial text
//   placeholder  text shown while empty
//   onSubmit(text)               Enter (one line or several, as in Slack; also
//                                Ctrl/Cmd+Enter); Shift+Enter adds a line
//   onHistory(direction, text)   ArrowUp (-1) on the first line / ArrowDown (+1)
//                                on the last line: return the text to show, or
//                                null to let the cursor move as usual
function create({ parent, doc = "", placeholder = "", onSubmit, onHistory, label }) {
  const submit = (view) => {
    const text = view.state.doc.toString();
    if (text.trim() && onSubmit) onSubmit(text);
    return true;
  };
  const historyStep = (direction) => (view) => {
    if (!onHistory) return false;
    const sel = view.state.selection.main;
    if (!sel.empty) return false;
    const line = view.state.doc.lineAt(sel.head);
    if (direction < 0 && line.number !== 1) return false;
    if (direction > 0 && line.number !== view.state.doc.lines) return false;
    const next = onHistory(direction, view.state.doc.toString());
    if (next == null) return false;
    view.dispatch({
      changes: { from: 0, to: view.state.doc.length, insert: next },
      selection: { anchor: next.length },
      scrollIntoView: true,
    });
    return true;
  };
  const keys = Prec.highest(keymap.of([
    { key: "Enter", run: submit },
    { key: "Shift-Enter", run: insertNewlineAndIndent },
    { key: "Mod-Enter", run: submit },
    { key: "ArrowUp", run: historyStep(-1) },
    { key: "ArrowDown", run: historyStep(1) },
  ]));
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc,
      extensions: [
        keys,
        history(),
        drawSelection(),
        dropCursor(),
        highlightSpecialChars(),
        indentOnInput(),
        bracketMatching(),
        indentUnit.of("    "),
        EditorState.tabSize.of(4),
        python(),
        syntaxHighlighting(classHighlighter),
        placeholderText(placeholder),
        EditorView.lineWrapping,
        EditorView.contentAttributes.of({ "aria-label": label || "Command" }),
        keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
      ],
    }),
  });
  return {
    view,
    getValue: () => view.state.doc.toString(),
    setValue: (text) => view.dispatch({
      changes: { from: 0, to: view.state.doc.length, insert: text },
      selection: { anchor: text.length },
    }),
    focus: () => view.focus(),
  };
}

// Fills `element` with `code` highlighted as Python: text nodes and spans
// with `tok-*` classes only (never HTML from the code).
function highlight(code, element) {
  element.textContent = "";
  const tree = pythonLanguage.parser.parse(code);
  highlightCode(code, tree, classHighlighter, (text, classes) => {
    if (classes) {
      const span = document.createElement("span");
      span.className = classes;
      span.textContent = text;
      element.appendChild(span);
    } else {
      element.appendChild(document.createTextNode(text));
    }
  }, () => element.appendChild(document.createTextNode("\n")));
}

window.TradeboxEditor = { create, highlight };
