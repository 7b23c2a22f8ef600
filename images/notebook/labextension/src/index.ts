/**
 * "Request export…": a modeller asks, from JupyterLab, for files of their home to leave the workspace
 * through the airlock. The request goes to this session's single-user server (api/cleanroom/exports),
 * which checks it and forwards it to the hub exactly as `cleanroom export` does; the hub decides whose
 * request it is and in which Workspace. Nothing here reads or sends a file's bytes: the copy Job does.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser, IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

const REQUEST = 'cleanroom:request-export';
const LIST = 'cleanroom:list-exports';
const ROUTE = 'api/cleanroom/exports';
// As the ExportRequest's schema asks (the server checks it again).
const MIN_JUSTIFICATION = 20;

interface IExportForm {
  files: string[];
  justification: string;
}

interface IExportRow {
  name: string;
  files: string[];
  phase: string;
  message: string;
  expires_at: string;
}

interface IAnswer {
  name?: string;
  namespace?: string;
  error?: string;
  problems?: string[];
  exports?: IExportRow[];
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text = '',
  className = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  // textContent only: names, paths and the approvers' reasons are never markup.
  node.textContent = text;
  if (className) {
    node.className = className;
  }
  return node;
}

/** The dialog's form: the files (one path of the home a line) and why they must leave. */
class ExportForm extends Widget implements Dialog.IBodyWidget<IExportForm> {
  private files: HTMLTextAreaElement;
  private justification: HTMLTextAreaElement;

  constructor(paths: string[]) {
    super();
    this.addClass('cr-ExportForm');
    this.files = element('textarea', paths.join('\n'));
    this.files.name = 'files';
    this.files.rows = Math.min(Math.max(paths.length, 2), 8);
    this.justification = element('textarea');
    this.justification.name = 'justification';
    this.justification.rows = 4;
    this.justification.placeholder =
      "e.g. Aggregate Dice scores per fold for the paper's table 2; no per-patient values";
    const filesLabel = element('label', 'Files of your home folder, one a line');
    filesLabel.appendChild(this.files);
    const whyLabel = element('label', `Why they must leave and what they hold (${MIN_JUSTIFICATION}+ characters)`);
    whyLabel.appendChild(this.justification);
    this.node.append(
      element(
        'p',
        'The files are copied into quarantine and checked for patient data; a data steward and a ' +
          'security officer then decide. Released files are downloaded from your exports page on the hub.'
      ),
      filesLabel,
      whyLabel
    );
  }

  getValue(): IExportForm {
    const files = this.files.value
      .split('\n')
      .map(line => line.trim())
      .filter(line => line.length > 0);
    return { files, justification: this.justification.value.trim() };
  }
}

async function call(method: 'GET' | 'POST', body?: IExportForm): Promise<[number, IAnswer]> {
  const settings = ServerConnection.makeSettings();
  const init: RequestInit = { method };
  if (body) {
    init.body = JSON.stringify(body);
  }
  const response = await ServerConnection.makeRequest(URLExt.join(settings.baseUrl, ROUTE), init, settings);
  let answer: IAnswer = {};
  try {
    answer = (await response.json()) as IAnswer;
  } catch {
    answer = { error: `HTTP ${response.status}` };
  }
  return [response.status, answer];
}

function exportsTable(rows: IExportRow[]): HTMLElement {
  if (rows.length === 0) {
    return element('p', 'You have asked for no export from this workspace yet.', 'cr-ExportNone');
  }
  const table = element('table', '', 'cr-ExportList');
  const head = table.createTHead().insertRow();
  for (const title of ['Export', 'Files', 'State', 'Until']) {
    head.appendChild(element('th', title));
  }
  const body = table.createTBody();
  for (const row of rows) {
    const line = body.insertRow();
    line.dataset.name = row.name;
    line.appendChild(element('td', row.name));
    line.appendChild(element('td', row.files.join(', ')));
    const state = element('td', row.phase, 'cr-ExportPhase');
    if (row.message) {
      state.appendChild(element('div', row.message, 'cr-ExportMessage'));
    }
    line.appendChild(state);
    line.appendChild(element('td', row.expires_at || '-'));
  }
  return table;
}

/** The user's export requests from this workspace, newest first, with `lead` above them. */
async function showExports(title: string, lead?: HTMLElement): Promise<void> {
  const [status, answer] = await call('GET');
  const body = new Widget();
  body.addClass('cr-ExportResult');
  if (lead) {
    body.node.appendChild(lead);
  }
  body.node.appendChild(element('h3', 'Your export requests from this workspace'));
  body.node.appendChild(
    status === 200
      ? exportsTable(answer.exports ?? [])
      : element('p', `The list is not available: ${answer.error ?? `HTTP ${status}`}`)
  );
  await showDialog({ title, body, buttons: [Dialog.okButton({ label: 'Close' })] });
}

async function requestExport(paths: string[]): Promise<void> {
  let form: IExportForm = { files: paths, justification: '' };
  for (;;) {
    const result = await showDialog({
      title: 'Request export',
      body: new ExportForm(form.files),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Request export' })],
      focusNodeSelector: 'textarea[name="justification"]'
    });
    if (!result.button.accept || result.value === null) {
      return;
    }
    form = result.value;
    const [status, answer] = await call('POST', form);
    if (status === 201 && answer.name) {
      const lead = element('p', '', 'cr-ExportRequested');
      lead.append(
        'Export requested: ',
        element('strong', answer.name, 'cr-ExportName'),
        ` (namespace ${answer.namespace ?? ''}). It is copied into quarantine and checked now.`
      );
      await showExports('Export requested', lead);
      return;
    }
    const problems = answer.problems ?? [answer.error ?? `HTTP ${status}`];
    await showErrorMessage('Export not requested', problems.join('\n'));
    if (!answer.problems) {
      return;
    }
  }
}

function selectedFiles(factory: IFileBrowserFactory, fallback: IDefaultFileBrowser): string[] {
  const browser = factory.tracker.currentWidget ?? fallback;
  return Array.from(browser.selectedItems())
    .filter(item => item.type !== 'directory')
    .map(item => item.path);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: '@cleanroom/airlock:plugin',
  description: 'Request export: files of the home leave only through the airlock',
  autoStart: true,
  requires: [IFileBrowserFactory, IDefaultFileBrowser, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    factory: IFileBrowserFactory,
    defaultBrowser: IDefaultFileBrowser,
    palette: ICommandPalette
  ) => {
    app.commands.addCommand(REQUEST, {
      label: 'Request export…',
      caption: 'Ask for the selected files to leave the workspace through the airlock, with a justification',
      execute: () => requestExport(selectedFiles(factory, defaultBrowser))
    });
    app.commands.addCommand(LIST, {
      label: 'Show my export requests',
      caption: 'Your export requests from this workspace and their state',
      execute: () => showExports('Export requests')
    });
    const category = 'Airlock';
    palette.addItem({ command: REQUEST, category });
    palette.addItem({ command: LIST, category });
    app.contextMenu.addItem({
      command: REQUEST,
      selector: '.jp-DirListing-item[data-isdir="false"]',
      rank: 60
    });
  }
};

export default plugin;
