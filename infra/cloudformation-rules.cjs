// An osls plugin (serverless.yml, `plugins`) that gives the template a CloudFormation `Rules` section.
//
// osls's schema for `resources` knows Resources, Conditions, Outputs and the like but not Rules: a `Rules` key
// there fails the package ("unrecognized property 'Rules'"), and nothing else writes one. The rules are therefore
// kept in `custom.cloudFormationRules` (resolved like the rest of serverless.yml) and copied here into both
// templates osls deploys: the one that first creates the stack, so that a deployment the rules refuse creates no
// resource, not even osls's deployment bucket, and the one that updates it.
'use strict';

const path = require('node:path');

class CloudFormationRules {
  constructor(serverless) {
    this.serverless = serverless;
    serverless.configSchemaHandler.defineCustomProperties({
      properties: { cloudFormationRules: { type: 'object' } },
    });
    this.hooks = { 'before:package:finalize': () => this.addRules() };
  }

  addRules() {
    const rules = (this.serverless.service.custom || {}).cloudFormationRules;
    if (!rules) return;
    const provider = this.serverless.service.provider;
    for (const template of [provider.compiledCloudFormationTemplate, provider.coreCloudFormationTemplate]) {
      if (template) template.Rules = { ...template.Rules, ...rules };
    }
    // The core template was written to .serverless/ before this hook; written again so the file matches.
    if (provider.coreCloudFormationTemplate) {
      const naming = this.serverless.getProvider('aws').naming;
      this.serverless.utils.writeFileSync(
        path.join(this.serverless.serviceDir, '.serverless', naming.getCoreTemplateFileName()),
        provider.coreCloudFormationTemplate,
      );
    }
  }
}

module.exports = CloudFormationRules;
