// Fills the sample BIRD configs in scripts/bird/: `__NAME__` placeholders plus sections between
// `# >>> name` and `# <<< name` lines, kept, dropped or repeated, so the samples stay plain BIRD files.
// Whole-line comments are copied as they are: they name the placeholders they explain.

/** Placeholder values by name (without the underscores). */
export type TemplateValues = Record<string, string>;

/** A section is kept once (`true`), dropped (`false`) or repeated once per value set. */
export type SectionChoice = boolean | TemplateValues[];

interface Section {
  name: string;
  body: Node[];
}
type Node = string | Section;

const OPEN_REGEXP = /^\s*# >>> (.+?)\s*$/;
const CLOSE_REGEXP = /^\s*# <<< (.+?)\s*$/;
const PLACEHOLDER_REGEXP = /__([A-Z0-9]+(?:_[A-Z0-9]+)*)__/g;

/**
 * Renders `text` with `values` and `sections`; marker lines are dropped, comment lines kept verbatim.
 * Throws on an unbalanced marker, a section without a choice, or a placeholder without a value.
 */
export function renderTemplate(
  text: string,
  values: TemplateValues,
  sections: Record<string, SectionChoice>,
): string {
  const lines: string[] = [];
  emit(parse(text.split("\n")), values, sections, lines);
  return lines.join("\n");
}

function parse(lines: string[]): Node[] {
  const root: Section = { name: "", body: [] };
  const stack: Section[] = [root];
  for (const line of lines) {
    const open = OPEN_REGEXP.exec(line);
    const close = CLOSE_REGEXP.exec(line);
    if (open) {
      const section: Section = { name: open[1], body: [] };
      stack[stack.length - 1].body.push(section);
      stack.push(section);
    } else if (close) {
      const top = stack.pop();
      if (top === undefined || top === root || top.name !== close[1]) {
        throw new Error(`Template section end "${close[1]}" does not match its start`);
      }
    } else {
      stack[stack.length - 1].body.push(line);
    }
  }
  if (stack.length !== 1) throw new Error(`Template section "${stack[stack.length - 1].name}" is not closed`);
  return root.body;
}

function emit(
  nodes: Node[],
  values: TemplateValues,
  sections: Record<string, SectionChoice>,
  out: string[],
): void {
  for (const node of nodes) {
    if (typeof node === "string") {
      out.push(node.trimStart().startsWith("#") ? node : fill(node, values));
      continue;
    }
    const choice = sections[node.name];
    if (choice === undefined) throw new Error(`Template section "${node.name}" has no value`);
    if (choice === true) emit(node.body, values, sections, out);
    if (Array.isArray(choice)) {
      for (const more of choice) emit(node.body, { ...values, ...more }, sections, out);
    }
  }
}

function fill(line: string, values: TemplateValues): string {
  return line.replace(PLACEHOLDER_REGEXP, (_, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`Template placeholder __${name}__ has no value`);
    return value;
  });
}
